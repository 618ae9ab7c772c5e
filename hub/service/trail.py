"""The money trail as operators see it: one case's trail, with what its accounts hold now,
the breaches on their orders, and, where other victims' money reached the same account, how
the money held there is attributed among them. Used by GetCaseTrail and `stophub case trail`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from hub.domain.cases import Case
from hub.domain.institutions import InstitutionKind
from hub.domain.returns import largest_remainder
from hub.domain.trail import OPEN_STATES, FollowRule, Trail, accounts_of, annotate, build
from hub.service import wire
from hub.service.ports import UnitOfWork
from stophub.v1 import trail_pb2

# Enough for any trail an operator reads; a case with more clocks than this is broken.
MAX_BREACHED_CLOCKS = 10_000
# Cases read to attribute shared money: a mule account reached by more victims than this is
# for the distribution (which reads them all), not for a picture.
MAX_LINKED = 200


def follow_rule(uow: UnitOfWork) -> FollowRule | None:
    rules = uow.rules.enabled()
    return rules[0].follow_rule() if rules else None


def trail_view(
    uow: UnitOfWork, case: Case, now: datetime, kinds: Mapping[str, InstitutionKind]
) -> trail_pb2.Trail:
    rule = follow_rule(uow)
    trail = build(case)
    annotate(trail, kinds, rule)
    breached = {
        c.order_id
        for c in uow.clocks.query(
            institution=None,
            case_id=case.case_id,
            open_only=False,
            breached_only=True,
            limit=MAX_BREACHED_CLOCKS,
            offset=0,
        )
        if c.order_id
    }
    pb = trail_pb2.Trail(
        case_id=case.case_id,
        loss_fen=case.loss_fen,
        held_fen=case.held_fen,
        max_layer=rule.max_layer if rule is not None and rule.follow else 0,
    )
    pb.read_time.FromDatetime(now)
    others = _linked_trails(uow, case)
    for node in trail.ordered():
        view = wire.trail_node_to_proto(node)
        view.breached = any(o.order_id in breached for o in node.orders)
        sharing = [
            (case_id, other_trail)
            for case_id, other_trail in others.items()
            if other_trail.kept(node.key) > 0
        ]
        if sharing and trail.kept(node.key) > 0:
            parts = [(case.case_id, trail.kept(node.key), node.held_fen)]
            for case_id, other_trail in sharing:
                other = other_trail.nodes[node.key]
                parts.append((case_id, other_trail.kept(node.key), other.held_fen))
            pooled = sum(held for _, _, held in parts)
            shares = largest_remainder(pooled, [claim for _, claim, _ in parts])
            view.pooled_held_fen = pooled
            for (case_id, claim, _), share in zip(parts, shares, strict=True):
                view.attributions.add(case_id=case_id, claim_fen=claim, attributed_fen=share)
        pb.nodes.append(view)
    pb.edges.extend(wire.trail_edge_to_proto(e) for e in trail.edges)
    return pb


def _linked_trails(uow: UnitOfWork, case: Case) -> dict[str, Trail]:
    found: dict[str, Trail] = {}
    for other_id, _, _ in uow.cases.involving(accounts_of(case), case.case_id, MAX_LINKED):
        if other_id in found:
            continue
        other = uow.cases.get(other_id)
        if other is not None and other.state in OPEN_STATES:
            found[other.case_id] = build(other)
    return found
