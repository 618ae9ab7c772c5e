"""The money trail of a case: which accounts the victim's money reached, and how much of it.

Plain Python, built from a case alone: the victim's payments give layer 1, and every stop or
freeze answer's onward transfers give the next layer. The amounts follow one rule (ADR 13):
what of the victim's money can have reached an account is bounded by what entered the branch
above it. An account passes on at most what it received minus what it held, and its onward
transfers carry that in time order, the earliest first, each at most its own amount. So a
downstream stop never holds more, in total along a branch, than the loss that entered it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from hub.domain.cases import (
    AccountRef,
    Case,
    CaseState,
    OnwardTransfer,
    Order,
    OrderKind,
    OrderState,
)
from hub.domain.institutions import InstitutionKind

NodeKey = tuple[str, str]  # (institution code, account number)

# Orders that no longer stand for a hold on the account, and never held (or were withdrawn).
NEVER_HELD = (OrderState.NO_MATCH, OrderState.REJECTED, OrderState.CANCELLED)
# A downstream stop in these states still claims its share of the branch.
LIVE_HOLD = (OrderState.PENDING, OrderState.HOLDING, OrderState.CONVERTED)

DEFAULT_MAX_LAYER = 5
# Cases whose money may still be chased and held: the ones links and distributions look at.
OPEN_STATES = (CaseState.REPORTED, CaseState.VERIFIED)


class NodeStatus(StrEnum):
    VICTIM = "victim"
    ORDERED = "ordered"
    AWAITING_CENTRE = "awaiting_centre"
    BEYOND_REACH = "beyond_reach"
    EXHAUSTED = "exhausted"


@dataclass(eq=False)
class Node:
    key: NodeKey
    holder: str
    layer: int = -1
    received_fen: int = 0
    orders: list[Order] = field(default_factory=list)
    status: NodeStatus = NodeStatus.AWAITING_CENTRE
    note: str = ""

    @property
    def node_id(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def account(self) -> AccountRef:
        return AccountRef(self.key[0], self.key[1], self.holder)

    @property
    def held_fen(self) -> int:
        return sum(o.held_fen for o in self.orders)

    @property
    def latest_order(self) -> Order | None:
        return self.orders[-1] if self.orders else None

    def passed_on_after_holding(self) -> int:
        """What the account held when it reported its transfers: the first answered hold."""
        for o in self.orders:
            if o.answered_at is not None and o.state not in NEVER_HELD:
                return o.amount_held_fen
        return 0


@dataclass(eq=False)
class Edge:
    source: NodeKey
    target: NodeKey
    at: datetime
    amount_fen: int
    reference: str = ""
    reported_by: str = ""  # the hold order whose answer reported it; "" for the victim's payment
    carried_fen: int = 0
    cycle: bool = False
    # What of the transfer the reporting institution traced to the order's money.
    traced_fen: int = 0


@dataclass
class Trail:
    case_id: str
    victim: NodeKey
    nodes: dict[NodeKey, Node]
    edges: list[Edge]

    def node(self, institution: str, account: str) -> Node | None:
        return self.nodes.get((institution, account))

    def kept(self, key: NodeKey) -> int:
        """What of the victim's money can still be in an account: what reached it less what
        its onward transfers carried on (a victim's claim on the money held there)."""
        node = self.nodes.get(key)
        if node is None or node.status is NodeStatus.VICTIM:
            return 0
        out = sum(e.carried_fen for e in self.edges if e.source == key and e.reported_by)
        return max(node.received_fen - out, 0)

    def carried(self, reported_by: str, target: NodeKey) -> int:
        return sum(
            e.carried_fen
            for e in self.edges
            if e.reported_by == reported_by and e.target == target and not e.cycle
        )

    def ordered(self) -> list[Node]:
        """Nodes by layer, then in the order the money reached them."""
        first_seen = {key: i for i, key in enumerate(self.nodes)}
        return sorted(
            self.nodes.values(),
            key=lambda n: (n.layer if n.layer >= 0 else 10**6, first_seen[n.key]),
        )


def build(case: Case) -> Trail:
    """The trail as the case's records show it now."""
    first = case.transactions[0]
    victim: NodeKey = (first.payer_institution, first.payer_account)
    nodes: dict[NodeKey, Node] = {
        victim: Node(victim, case.victim_name, layer=0, status=NodeStatus.VICTIM)
    }
    edges: list[Edge] = []

    def node(key: NodeKey, holder: str) -> Node:
        found = nodes.get(key)
        if found is None:
            found = nodes[key] = Node(key, holder)
        elif not found.holder and holder:
            found.holder = holder
        return found

    for p in case.transactions:
        target = (p.payee_institution, p.payee_account)
        node(target, p.payee_name).received_fen += p.amount_fen
        edges.append(
            Edge(victim, target, p.transaction_time, p.amount_fen, p.reference, "", p.amount_fen)
        )
    for o in case.orders:
        if o.is_hold:
            node((o.account_institution, o.account_number), o.holder_name).orders.append(o)
    reported: dict[NodeKey, list[tuple[Order, OnwardTransfer]]] = defaultdict(list)
    seen: set[tuple[NodeKey, NodeKey, datetime, int, str]] = set()
    for o in case.orders:
        if not o.is_hold:
            continue
        source = (o.account_institution, o.account_number)
        for t in o.onward:
            target = (t.to_institution, t.to_account)
            # A second stop on the same account reports the same transfers again.
            fingerprint = (source, target, t.transfer_time, t.amount_fen, t.reference)
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            node(target, t.to_holder)
            reported[source].append((o, t))
    for key, items in reported.items():
        items.sort(key=lambda pair: (pair[1].transfer_time, pair[1].position))
        for o, t in items:
            edges.append(
                Edge(
                    key,
                    (t.to_institution, t.to_account),
                    t.transfer_time,
                    t.amount_fen,
                    t.reference,
                    o.order_id,
                    traced_fen=t.traced_fen,
                )
            )
    _mark_cycles(victim, edges)
    _carry(case, nodes, edges)
    _layers(victim, nodes, edges)
    return Trail(case.case_id, victim, nodes, edges)


def _mark_cycles(victim: NodeKey, edges: list[Edge]) -> None:
    """A transfer back to an account upstream on its own branch is drawn, not followed."""
    out: dict[NodeKey, list[Edge]] = defaultdict(list)
    for e in edges:
        out[e.source].append(e)
    for items in out.values():
        items.sort(key=lambda e: e.at)
    on_path: set[NodeKey] = set()
    done: set[NodeKey] = set()
    # Iterative depth-first search: a trail can be long enough to exhaust recursion.
    stack: list[tuple[NodeKey, int]] = [(victim, 0)]
    on_path.add(victim)
    while stack:
        key, i = stack.pop()
        if i < len(out[key]):
            stack.append((key, i + 1))
            e = out[key][i]
            if e.target in on_path:
                e.cycle = True
            elif e.target not in done:
                on_path.add(e.target)
                stack.append((e.target, 0))
        else:
            on_path.discard(key)
            done.add(key)


def _carry(case: Case, nodes: dict[NodeKey, Node], edges: list[Edge]) -> None:
    """Fill each onward edge's carried amount and each node's received amount, parents first."""
    incoming: dict[NodeKey, int] = defaultdict(int)
    out: dict[NodeKey, list[Edge]] = defaultdict(list)
    for e in edges:
        if e.reported_by:
            out[e.source].append(e)
            if not e.cycle:
                incoming[e.target] += 1
    payees = {(t.payee_institution, t.payee_account) for t in case.transactions}
    ready = [key for key in nodes if incoming[key] == 0 and key in payees]
    processed: set[NodeKey] = set()
    while ready:
        key = ready.pop(0)
        if key in processed:
            continue
        processed.add(key)
        here = nodes[key]
        available = max(here.received_fen - here.passed_on_after_holding(), 0)
        for e in sorted(out[key], key=lambda e: e.at):
            e.carried_fen = min(e.traced_fen or e.amount_fen, available)
            available -= e.carried_fen
            if e.cycle:
                continue  # money gone back upstream: not counted twice
            nodes[e.target].received_fen += e.carried_fen
            incoming[e.target] -= 1
            if incoming[e.target] == 0:
                ready.append(e.target)


def _layers(victim: NodeKey, nodes: dict[NodeKey, Node], edges: list[Edge]) -> None:
    out: dict[NodeKey, list[NodeKey]] = defaultdict(list)
    for e in edges:
        if not e.cycle:
            out[e.source].append(e.target)
    frontier = [victim]
    nodes[victim].layer = 0
    while frontier:
        following: list[NodeKey] = []
        for key in frontier:
            for target in out[key]:
                if nodes[target].layer < 0:
                    nodes[target].layer = nodes[key].layer + 1
                    following.append(target)
        frontier = following


def accounts_of(case: Case) -> set[NodeKey]:
    """Every account the case's money reached: payees, held accounts, transfer targets."""
    found = {(t.payee_institution, t.payee_account) for t in case.transactions}
    for o in case.orders:
        if o.is_hold:
            found.add((o.account_institution, o.account_number))
        found.update((t.to_institution, t.to_account) for t in o.onward)
    return found


def branch_allowance(case: Case, upstream: Order, account: AccountRef) -> int:
    """What a new downstream stop may hold in `account`: the victim's money the upstream
    order's transfers can have carried there, less what live stops on that branch claim."""
    trail = build(case)
    target = (account.institution_code, account.account_number)
    carried = trail.carried(upstream.order_id, target)
    claimed = sum(
        o.amount_fen
        for o in case.orders
        if o.kind is OrderKind.STOP
        and o.upstream_order_id == upstream.order_id
        and (o.account_institution, o.account_number) == target
        and o.state in LIVE_HOLD
    )
    return max(carried - claimed, 0)


@dataclass(frozen=True)
class FollowRule:
    """How far the hub follows the money in the centre's name (its standing rule)."""

    follow: bool
    max_layer: int
    max_amount_fen: int


@dataclass(frozen=True)
class Planned:
    """A downstream stop the hub issues by itself."""

    account: AccountRef
    amount_fen: int
    transactions: tuple[tuple[datetime, int], ...]
    layer: int


@dataclass(frozen=True)
class Escalated:
    """Money that moved where the hub does not follow it by itself: the centre's to decide."""

    account: AccountRef
    carried_fen: int
    layer: int
    status: NodeStatus
    why: str


def follow(
    trail: Trail,
    answered: Order,
    members: Mapping[str, InstitutionKind],
    rule: FollowRule | None,
) -> tuple[list[Planned], list[Escalated]]:
    """What the onward transfers in `answered`'s answer call for: a stop for each receiving
    account the standing rule reaches, an escalation for every other one that money reached."""
    planned: list[Planned] = []
    escalated: list[Escalated] = []
    targets: dict[NodeKey, list[Edge]] = {}
    for e in trail.edges:
        if e.reported_by == answered.order_id and not e.cycle:
            targets.setdefault(e.target, []).append(e)
    for key, branch in targets.items():
        node = trail.nodes[key]
        carried = sum(e.carried_fen for e in branch)
        layer = node.layer if node.layer > 0 else (answered.layer or 1) + 1
        if carried == 0:
            continue  # none of the victim's money can be there: the branch was spent
        if any(o.state in LIVE_HOLD and o.kind is OrderKind.STOP for o in node.orders):
            escalated.append(
                Escalated(
                    node.account,
                    carried,
                    layer,
                    NodeStatus.ORDERED,
                    "already stopped in this case; it received more along another "
                    "branch: the centre may stop it again",
                )
            )
            continue
        kind = members.get(key[0])
        if kind is None or not kind.keeps_accounts:
            escalated.append(
                Escalated(
                    node.account,
                    carried,
                    layer,
                    NodeStatus.BEYOND_REACH,
                    f"{key[0]} is not a member institution: beyond the hub's reach",
                )
            )
            continue
        why = _not_followed(rule, layer, carried)
        if why:
            escalated.append(
                Escalated(node.account, carried, layer, NodeStatus.AWAITING_CENTRE, why)
            )
            continue
        planned.append(
            Planned(
                node.account,
                carried,
                tuple((e.at, e.amount_fen) for e in branch),
                layer,
            )
        )
    return planned, escalated


def _not_followed(rule: FollowRule | None, layer: int, carried: int) -> str:
    if rule is None or not rule.follow:
        return "no standing rule follows onward transfers: the centre decides"
    if layer > rule.max_layer:
        return f"layer {layer} is deeper than the standing rule follows ({rule.max_layer})"
    if carried > rule.max_amount_fen:
        return "the amount is above the standing rule's limit for an automatic stop"
    return ""


def annotate(trail: Trail, members: Mapping[str, InstitutionKind], rule: FollowRule | None) -> None:
    """Each node's status, and for the ones nobody stopped, why (for the operator's view)."""
    for node in trail.nodes.values():
        if node.status is NodeStatus.VICTIM:
            continue
        kind = members.get(node.key[0])
        if node.orders:
            node.status = NodeStatus.ORDERED
        elif kind is None or not kind.keeps_accounts:
            node.status = NodeStatus.BEYOND_REACH
            node.note = f"{node.key[0]} is not a member institution"
        elif node.received_fen == 0:
            node.status = NodeStatus.EXHAUSTED
            node.note = "none of the victim's money can have reached it"
        else:
            node.status = NodeStatus.AWAITING_CENTRE
            node.note = _not_followed(rule, node.layer, node.received_fen) or (
                "waiting for the centre"
            )
