"""The blacklist's handlers over fakes: the five-year cap across relistings, the digests kept
per change and equal to a recomputation, the refusals that change nothing, and the list key."""

from __future__ import annotations

from datetime import timedelta

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import ListDigest
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from hub.service.commands.blacklist import CHECK_LIST, PUBLISH_LIST_ENTRY, REMOVE_LIST_ENTRY
from hub.service.lists import entry_of, expire_due
from stophub.v1 import blacklist_pb2
from tests.unit.test_handlers import MULE_B, World, account

TRADER = blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER


def listing(case_id: str, number: str = "6222020000000002") -> blacklist_pb2.PublishListEntryBody:
    return blacklist_pb2.PublishListEntryBody(
        account=account("BANKB", number, "Li Si"),
        basis=TRADER,
        reason="account seller",
        source_case_id=case_id,
    )


def publish(w: World, body: blacklist_pb2.PublishListEntryBody) -> blacklist_pb2.ListEntryRecord:
    record = w.send(PUBLISH_LIST_ENTRY, "AFC", body)
    assert isinstance(record, blacklist_pb2.ListEntryRecord)
    return record


def recomputed(w: World) -> tuple[int, int, int]:
    """(count, clear digest, token digest) of the live entries, from scratch."""
    clear, tokens = ListDigest(), ListDigest()
    for row in w.store.state.list_rows.values():
        if row.ended_version is None:
            entry = entry_of(row)
            clear.add_hash(entry.clear_hash())
            tokens.add_hash(entry.token_hash(row.subject_token))
    return clear.count, clear.value, tokens.value


def test_the_state_follows_every_change_and_equals_a_recomputation() -> None:
    w = World()
    case = w.verified((MULE_B, 1_000_000))
    records = [publish(w, listing(case.case_id, f"62220200000000{i:02d}")) for i in range(5)]
    w.send(
        REMOVE_LIST_ENTRY,
        "AFC",
        blacklist_pb2.RemoveListEntryBody(entry_id=records[1].entry.entry_id, reason="mistake"),
    )
    w.clock.advance(timedelta(days=800))
    assert expire_due(w.hub) == 4
    state = w.store.state.list_state
    assert state.version == 10 and (state.count, state.clear_digest, state.token_digest) == (
        recomputed(w)
    )
    assert [op for _, op, _, _ in w.store.state.list_changes] == [
        "add",
        "add",
        "add",
        "add",
        "add",
        "remove",
        "expire",
        "expire",
        "expire",
        "expire",
    ]


def test_a_party_is_never_listed_more_than_five_years_in_a_row() -> None:
    w = World()
    case = w.verified((MULE_B, 1_000_000))
    first = publish(w, listing(case.case_id))
    # Relisted as each term ends (within the 30-day gap): 24 + 24 months, then the cap.
    w.clock.advance(timedelta(days=731))
    expire_due(w.hub)
    second = publish(w, listing(case.case_id))
    w.clock.advance(timedelta(days=731))
    expire_due(w.hub)
    third = publish(w, listing(case.case_id))
    start = first.entry.listed_time.ToDatetime()
    assert third.entry.expire_time.ToDatetime() - start <= timedelta(days=5 * 366)
    assert second.entry.expire_time.ToDatetime() > second.entry.listed_time.ToDatetime()
    w.clock.advance(timedelta(days=400))
    expire_due(w.hub)
    err = w.refuse(
        PUBLISH_LIST_ENTRY,
        w.seal("AFC", listing(case.case_id)),
        FailedPrecondition,
        "LISTING_CAP_REACHED",
    )
    assert "5 years in a row" in err.message


def test_refusals_change_nothing() -> None:
    w = World()
    case = w.verified((MULE_B, 1_000_000))
    publish(w, listing(case.case_id))
    w.refuse(
        PUBLISH_LIST_ENTRY,
        w.seal("AFC", listing(case.case_id)),
        FailedPrecondition,
        "ALREADY_LISTED",
    )
    both = listing(case.case_id)
    both.person.CopyFrom(blacklist_pb2.ListedPerson(id_number="11010519491231002X", name="x"))
    w.refuse(PUBLISH_LIST_ENTRY, w.seal("AFC", both), InvalidArgument, "INVALID_FIELD")
    bad_id = blacklist_pb2.PublishListEntryBody(
        person=blacklist_pb2.ListedPerson(id_number="12345", name="x"),
        basis=TRADER,
        reason="r",
        source_case_id=case.case_id,
    )
    w.refuse(
        PUBLISH_LIST_ENTRY,
        w.seal("AFC", bad_id),
        InvalidArgument,
        "INVALID_FIELD",
        "person.id_number",
    )
    w.refuse(
        REMOVE_LIST_ENTRY,
        w.seal("AFC", blacklist_pb2.RemoveListEntryBody(entry_id="L-NONE", reason="x")),
        NotFound,
        "ENTRY_NOT_FOUND",
    )
    too_many = blacklist_pb2.CheckListBody(
        subjects=[blacklist_pb2.ListSubject(id_number="11010519491231002X")] * 1001
    )
    err = w.refuse(CHECK_LIST, w.seal("BANKA", too_many), InvalidArgument, "INVALID_FIELD")
    assert "at most 1000" in err.message
    token_too_short = blacklist_pb2.CheckListBody(
        subjects=[blacklist_pb2.ListSubject(token=b"abc")]
    )
    w.refuse(
        CHECK_LIST,
        w.seal("BANKA", token_too_short),
        InvalidArgument,
        "INVALID_FIELD",
        "subjects[0].token",
    )


def test_without_the_list_key_or_with_another_nothing_is_published() -> None:
    w = World()
    case = w.verified((MULE_B, 1_000_000))
    key = w.hub.list_key
    w.hub.list_key = None
    w.refuse(
        PUBLISH_LIST_ENTRY,
        w.seal("AFC", listing(case.case_id)),
        FailedPrecondition,
        "LIST_KEY_NOT_CONFIGURED",
    )
    w.hub.list_key = key
    publish(w, listing(case.case_id))
    w.hub.list_key = ListKey.generate()
    w.refuse(
        PUBLISH_LIST_ENTRY,
        w.seal("AFC", listing(case.case_id, "6222020000000099")),
        FailedPrecondition,
        "LIST_KEY_CHANGED",
    )
