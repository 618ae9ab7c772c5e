"""Trust nobody: the replay window, the transport identity, and the key lifecycle.

Everything goes through the hub's real pipeline (real signatures, fake store), with the clock
moved by hand.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.crypto.keys import PrivateKey
from hub.crypto.signing import ECDSA_P256
from hub.domain.errors import Unauthenticated
from hub.service.admin import NewKey
from hub.service.commands.case import CREATE_REPORT
from hub.service.commands.delivery import open_stream
from hub.service.commands.institution import GET_INSTITUTION
from hub.service.evidence import check_record, verify_signatures
from hub.service.gate import MAX_CLOCK_SKEW, REPLAY_WINDOW
from hub.service.ports import AuditRecord
from stophub.v1 import case_pb2, envelope_pb2, institution_pb2
from tests.unit.test_handlers import World, report_body


@pytest.fixture
def w() -> World:
    return World()


def report(w: World, **kw: object) -> envelope_pb2.Envelope:
    return w.seal("BANKA", report_body(now=w.clock.now()), **kw)  # type: ignore[arg-type]


# ---- the replay window ----------------------------------------------------------------------


def test_an_envelope_older_than_the_window_is_refused_and_changes_nothing(w: World) -> None:
    envelope = report(w)
    w.clock.advance(REPLAY_WINDOW + timedelta(seconds=1))
    err = w.refuse(CREATE_REPORT, envelope, Unauthenticated, "ENVELOPE_EXPIRED")
    assert "5 minute(s)" in err.message and "new id" in err.message
    assert not w.store.cases


def test_an_envelope_from_too_far_in_the_future_is_refused(w: World) -> None:
    w.clock.advance(MAX_CLOCK_SKEW + timedelta(seconds=1))
    envelope = report(w)  # signed by a sender whose clock runs ahead of the hub's
    w.clock.advance(-(MAX_CLOCK_SKEW + timedelta(seconds=1)))
    err = w.refuse(CREATE_REPORT, envelope, Unauthenticated, "ENVELOPE_FROM_FUTURE")
    assert "NTP" in err.message


def test_the_edges_of_the_window_are_accepted(w: World) -> None:
    old = report(w)
    w.clock.advance(REPLAY_WINDOW - timedelta(microseconds=1))
    w.open(w.hub.handle(CREATE_REPORT, old), CREATE_REPORT, "BANKA")
    w.clock.advance(MAX_CLOCK_SKEW)
    ahead = report(w)
    w.clock.advance(-MAX_CLOCK_SKEW)
    w.open(w.hub.handle(CREATE_REPORT, ahead), CREATE_REPORT, "BANKA")
    assert len(w.store.cases) == 2


def test_a_replay_inside_the_window_gets_the_original_answer_and_acts_once(w: World) -> None:
    envelope = report(w)
    first = w.hub.handle(CREATE_REPORT, envelope)
    deliveries = len(w.store.deliveries)
    for step in (timedelta(seconds=1), timedelta(minutes=2), timedelta(minutes=2)):
        w.clock.advance(step)
        replay = envelope_pb2.Envelope.FromString(envelope.SerializeToString())
        assert w.hub.handle(CREATE_REPORT, replay) == first
    assert len(w.store.cases) == 1
    assert len(w.store.deliveries) == deliveries


def test_a_replay_after_the_window_is_refused_not_answered(w: World) -> None:
    envelope = report(w)
    w.hub.handle(CREATE_REPORT, envelope)
    w.clock.advance(REPLAY_WINDOW + timedelta(minutes=1))
    w.refuse(CREATE_REPORT, envelope, Unauthenticated, "ENVELOPE_EXPIRED")
    assert len(w.store.cases) == 1


def test_reads_and_streams_are_held_to_the_window_too(w: World) -> None:
    read = w.seal("BANKA", institution_pb2.GetInstitutionBody(code="BANKB"))
    w.clock.advance(REPLAY_WINDOW + timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="more than 5 minute"):
        w.hub.handle(GET_INSTITUTION, read)
    from stophub.v1 import delivery_pb2

    subscribe = w.seal("BANKA", delivery_pb2.SubscribeBody())
    w.clock.advance(REPLAY_WINDOW + timedelta(seconds=1))
    with pytest.raises(Unauthenticated) as stale:
        open_stream(w.hub, subscribe)
    assert stale.value.reason == "ENVELOPE_EXPIRED"


# ---- the transport identity -----------------------------------------------------------------


def test_the_certificate_must_name_the_sender(w: World) -> None:
    w.hub.require_peer = True
    envelope = report(w)
    with pytest.raises(Unauthenticated) as none:
        w.hub.handle(CREATE_REPORT, envelope)
    assert none.value.reason == "NO_CLIENT_CERTIFICATE"
    with pytest.raises(Unauthenticated) as other:
        w.hub.handle(CREATE_REPORT, envelope, peer="BANKB")
    assert other.value.reason == "CERTIFICATE_MISMATCH"
    assert "'BANKB'" in other.value.message and "'BANKA'" in other.value.message
    assert not w.store.cases
    w.open(w.hub.handle(CREATE_REPORT, envelope, peer="BANKA"), CREATE_REPORT, "BANKA")


# ---- key lifecycle --------------------------------------------------------------------------


def test_rotation_overlaps_then_retires_the_old_key(w: World) -> None:
    old = w.keys["BANKA"]
    new = PrivateKey.generate(ECDSA_P256)
    key_id, retiring = w.registry.rotate_key(
        "BANKA", NewKey(new.algorithm, new.public_key), timedelta(hours=24)
    )
    assert key_id == new.key_id and retiring == [old.key_id]

    w.clock.advance(timedelta(hours=23))
    w.hub.handle(CREATE_REPORT, report(w, key=old))  # the overlap: both sign
    w.hub.handle(CREATE_REPORT, report(w, key=new))

    w.clock.advance(timedelta(hours=1))
    err = w.refuse(CREATE_REPORT, report(w, key=old), Unauthenticated, "KEY_RETIRED")
    assert new.key_id in err.message
    w.hub.handle(CREATE_REPORT, report(w, key=new))
    assert len(w.store.cases) == 3


def test_revocation_takes_effect_at_once(w: World) -> None:
    w.hub.handle(CREATE_REPORT, report(w))
    w.registry.revoke_key("BANKA", w.keys["BANKA"].key_id)
    w.refuse(CREATE_REPORT, report(w), Unauthenticated, "KEY_REVOKED")


def test_old_messages_still_verify_with_the_key_valid_when_they_were_signed(w: World) -> None:
    first, second = w.keys["BANKA"], PrivateKey.generate()
    w.hub.handle(CREATE_REPORT, report(w, key=first))
    w.registry.rotate_key(
        "BANKA", NewKey(second.algorithm, second.public_key), timedelta(minutes=10)
    )
    w.clock.advance(timedelta(minutes=5))
    w.hub.handle(CREATE_REPORT, report(w, key=first))
    w.hub.handle(CREATE_REPORT, report(w, key=second))
    w.clock.advance(timedelta(hours=1))
    w.registry.revoke_key("BANKA", second.key_id)  # compromised later: what it signed stands
    third = PrivateKey.generate()
    w.registry.add_key("BANKA", NewKey(third.algorithm, third.public_key))
    w.hub.handle(CREATE_REPORT, report(w, key=third))

    result = verify_signatures(w.store)
    assert result.ok, result.problems
    assert result.by_key[("BANKA", first.key_id)] == 2
    assert result.by_key[("BANKA", second.key_id)] == 1
    assert result.by_key[("BANKA", third.key_id)] == 1
    assert result.by_key[("HUB", w.hub_key.key_id)] == result.checked - 4


def test_evidence_names_a_message_recorded_after_its_key_was_revoked_or_altered(
    w: World,
) -> None:
    w.clock.advance(timedelta(minutes=1))
    then = w.clock.now()
    w.hub.handle(CREATE_REPORT, report(w))
    received = next(r for r in w.store.audit if r.kind == "received")
    institutions = {"BANKA": w.registry.get("BANKA")}
    w.clock.advance(timedelta(minutes=1))
    w.registry.revoke_key("BANKA", w.keys["BANKA"].key_id)
    institutions_now = {"BANKA": w.registry.get("BANKA")}
    later = w.clock.now() + timedelta(seconds=1)

    assert check_record(AuditRecord(1, then, received), institutions_now) == (
        "BANKA",
        w.keys["BANKA"].key_id,
    )
    late = check_record(AuditRecord(1, later, received), institutions_now)
    assert not isinstance(late, tuple) and "revoked" in late.why

    envelope = envelope_pb2.Envelope.FromString(received.payload or b"")
    body = case_pb2.Report.FromString(envelope.body)
    body.victim.name = "Someone Else"
    envelope.body = body.SerializeToString()
    forged = type(received)(**{**received.__dict__, "payload": envelope.SerializeToString()})
    bad = check_record(AuditRecord(1, then, forged), institutions)
    assert not isinstance(bad, tuple) and "does not verify" in bad.why
