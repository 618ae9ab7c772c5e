"""The blacklist's domain (issue 7, first part): subjects in normal form, terms by basis, the
five-years-in-a-row cap, and the order-independent digest a replica checks itself with."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.blacklist import (
    Basis,
    Entry,
    EntryKind,
    ListDigest,
    Subject,
    Terms,
    list_entry,
)
from hub.domain.cases import add_months
from hub.domain.errors import FailedPrecondition, InvalidArgument

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TERMS = Terms()
PERSON = Subject.person("11010119900101123x", "Ｌｉ Ｓｉ")


def listed(
    subject: Subject = PERSON,
    basis: Basis = Basis.ACCOUNT_TRADER,
    *,
    now: datetime = T0,
    history: list[Entry] | None = None,
    entry_id: str = "L1",
) -> Entry:
    return list_entry(
        entry_id,
        subject,
        basis,
        "sold two bank cards to a fraud ring",
        "C20260302-0001",
        history=history or [],
        now=now,
        listed_by="AFC",
        terms=TERMS,
    )


def test_subjects_are_keyed_in_one_normal_form() -> None:
    assert PERSON.key == "11010119900101123X" and PERSON.kind is EntryKind.PERSON
    assert PERSON.name == "Li Si", "full-width letters fold to the same name"
    account = Subject.account(" bankb ", "6222020000000002", "Li Si")
    assert account.key == "BANKB/6222020000000002"
    with pytest.raises(InvalidArgument):
        Subject.person("1101011990010112", "Li Si")
    with pytest.raises(InvalidArgument):
        Subject.account("BANKB", "62 22", "Li Si")
    with pytest.raises(InvalidArgument):
        Subject.person("110101199001011234", " ")


def test_the_term_follows_the_basis() -> None:
    trader = listed(basis=Basis.ACCOUNT_TRADER)
    convicted = listed(Subject.person("110101198001011234", "Wang Wu"), Basis.CONVICTED)
    assert trader.expires_at == add_months(T0, 24)
    assert convicted.expires_at == add_months(T0, 36)
    with pytest.raises(InvalidArgument):
        list_entry(
            "L9",
            PERSON,
            Basis.CONVICTED,
            " ",
            "C1",
            history=[],
            now=T0,
            listed_by="AFC",
            terms=TERMS,
        )


def test_a_party_is_listed_once_at_a_time() -> None:
    first = listed()
    with pytest.raises(FailedPrecondition) as twice:
        listed(history=[first], now=T0 + timedelta(days=10), entry_id="L2")
    assert twice.value.reason == "ALREADY_LISTED"


def test_never_more_than_five_years_in_a_row() -> None:
    first = listed(basis=Basis.CONVICTED)  # 3 years
    first.ended_at, first.end = first.expires_at, "expired"
    # Relisted as it expires: the run goes on, so the second listing ends at the 5-year cap.
    second = listed(basis=Basis.CONVICTED, now=first.expires_at, history=[first], entry_id="L2")
    assert second.expires_at == add_months(T0, 60)
    second.ended_at, second.end = second.expires_at, "expired"
    with pytest.raises(FailedPrecondition) as capped:
        listed(now=second.expires_at + timedelta(days=1), history=[first, second], entry_id="L3")
    assert capped.value.reason == "LISTING_CAP_REACHED"
    # After a real break the run starts again.
    later = second.expires_at + TERMS.run_gap + timedelta(days=1)
    third = listed(now=later, history=[first, second], entry_id="L3")
    assert third.expires_at == add_months(later, 24)


def test_a_removed_listing_ends_the_run() -> None:
    first = listed(basis=Basis.CONVICTED)
    first.ended_at, first.end = T0 + timedelta(days=100), "removed"
    again = listed(now=T0 + timedelta(days=101), history=[first], entry_id="L2")
    assert again.expires_at == add_months(T0 + timedelta(days=101), 24)


def entries(n: int) -> list[Entry]:
    return [
        listed(Subject.person(f"{110101199001010000 + i:018d}", f"P{i}"), entry_id=f"L{i}")
        for i in range(n)
    ]


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(12))), st.sets(st.integers(0, 11)))
def test_the_digest_depends_on_the_set_not_the_order_and_follows_each_change(
    order: list[int], removed: set[int]
) -> None:
    pool = entries(12)
    forwards = ListDigest.of(pool)
    shuffled = ListDigest.of(pool[i] for i in order)
    assert forwards.checkpoint(7) == shuffled.checkpoint(7)

    incremental = ListDigest.of(pool)
    for i in removed:
        incremental.remove(pool[i])
    rebuilt = ListDigest.of(e for i, e in enumerate(pool) if i not in removed)
    assert incremental.checkpoint(9) == rebuilt.checkpoint(9)
    assert incremental.count == 12 - len(removed)


def test_the_digest_sees_a_missing_a_doubled_or_an_altered_entry() -> None:
    pool = entries(5)
    good = ListDigest.of(pool).checkpoint(1)
    assert ListDigest.of(pool[:4]).checkpoint(1) != good
    assert ListDigest.of([*pool, pool[0]]).checkpoint(1) != good
    altered = dataclasses.replace(pool[2], name="P2 ")
    assert ListDigest.of([*pool[:2], altered, *pool[3:]]).checkpoint(1).digest != good.digest
    assert len(good.digest_hex) == 64
