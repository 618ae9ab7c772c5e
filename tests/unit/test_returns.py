"""Fair returns in the domain: largest-remainder shares in fen, and the distribution's rules
(hub/domain/returns.py)."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.errors import FailedPrecondition, InvalidArgument
from hub.domain.returns import (
    Claim,
    Distribution,
    DistributionMethod,
    DistributionState,
    largest_remainder,
)
from tests.unit.test_cases import T0

weights = st.lists(st.integers(0, 10**12), min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(weights, st.integers(0, 10**13))
def test_shares_add_up_exactly_and_never_exceed_a_claim(ws: list[int], total: int) -> None:
    shares = largest_remainder(total, ws)

    assert sum(shares) == min(total, sum(ws)), "not one fen created or lost"
    assert all(0 <= s <= w for s, w in zip(shares, ws, strict=True)), "never above the claim"


@settings(max_examples=500, deadline=None)
@given(weights.filter(lambda ws: sum(ws) > 0), st.integers(0, 10**13))
def test_each_share_is_within_one_fen_of_the_exact_proportion(ws: list[int], total: int) -> None:
    total = min(total, sum(ws))
    shares = largest_remainder(total, ws)
    for share, w in zip(shares, ws, strict=True):
        exact = Fraction(total * w, sum(ws))
        assert exact - 1 < share < exact + 1


@settings(max_examples=200, deadline=None)
@given(weights.filter(lambda ws: sum(ws) > 0), st.integers(0, 10**13))
def test_a_larger_claim_never_gets_less(ws: list[int], total: int) -> None:
    shares = largest_remainder(min(total, sum(ws)), ws)
    for i in range(len(ws)):
        for j in range(len(ws)):
            if ws[i] > ws[j]:
                assert shares[i] >= shares[j]


def test_the_leftover_fen_go_to_the_largest_remainders_then_the_earlier_claim() -> None:
    assert largest_remainder(100, [100, 100, 100]) == [34, 33, 33]
    assert largest_remainder(10, [3, 3, 4]) == [3, 3, 4]
    assert largest_remainder(7, [5, 5]) == [4, 3]
    assert largest_remainder(0, [5, 5]) == [0, 0]
    assert largest_remainder(50, [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        largest_remainder(-1, [1])


def claim(case_id: str, reached: int, loss: int | None = None) -> Claim:
    return Claim(case_id, "BANKA", f"6222-{case_id}", f"victim {case_id}", loss or reached, reached)


def start(*claims: Claim, pool: int) -> Distribution:
    return Distribution.start(
        "D1",
        ("BANKB", "6222020000000002"),
        claims[0].case_id,
        claims,
        pool,
        started_by="AFC",
        now=T0,
        message_id="m-start",
    )


def test_one_victims_money_is_traced_and_goes_back_without_notice() -> None:
    d = start(claim("C1", 300_000), pool=250_000)
    assert d.method is DistributionMethod.TRACED
    assert d.notice_ends_at is None
    assert [c.share_fen for c in d.claims] == [250_000]


def test_mixed_money_is_shared_pro_rata_after_thirty_days_of_notice() -> None:
    d = start(claim("C1", 3_000_000), claim("C2", 500_000), pool=2_000_000)
    assert d.method is DistributionMethod.PRO_RATA
    assert d.notice_ends_at == T0 + timedelta(days=30)
    assert [c.share_fen for c in d.claims] == [1_714_286, 285_714]
    assert sum(c.share_fen for c in d.claims) == d.pool_fen


def test_traced_money_goes_first_and_the_rest_is_shared() -> None:
    c1, c2 = claim("C1", 3_000_000), claim("C2", 500_000)
    c2.traced_fen = 400_000
    d = start(c1, c2, pool=1_000_000)
    # 400,000 traced to C2; 600,000 shared on what is left of the claims: 3,000,000 : 100,000.
    assert [c.share_fen for c in d.claims] == [580_645, 419_355]
    assert d.method is DistributionMethod.PRO_RATA
    all_traced = claim("C3", 100)
    all_traced.traced_fen = 100
    d2 = start(claim("C1", 3_000_000), all_traced, pool=100)
    assert d2.method is DistributionMethod.TRACED


def test_traced_money_cannot_exceed_the_claim_or_the_pool() -> None:
    c1 = claim("C1", 100)
    c1.traced_fen = 101
    with pytest.raises(InvalidArgument):
        start(c1, claim("C2", 50), pool=1_000)
    c2 = claim("C2", 5_000)
    c2.traced_fen = 5_000
    with pytest.raises(InvalidArgument):
        start(claim("C1", 100), c2, pool=1_000)


def test_nothing_frozen_or_no_claims_is_nothing_to_share() -> None:
    with pytest.raises(FailedPrecondition) as nothing:
        start(claim("C1", 100), pool=0)
    assert nothing.value.reason == "NOTHING_FROZEN"


def test_objections_during_the_notice_and_a_decision_after_it_that_answers_them() -> None:
    d = start(claim("C1", 3_000_000), claim("C2", 500_000), pool=2_000_000)
    d.object("BANKB", "the holder says part of it is his salary", T0 + timedelta(days=3), "m-o")
    with pytest.raises(InvalidArgument):
        d.object("BANKB", "  ", T0 + timedelta(days=3), "m-o2")
    with pytest.raises(FailedPrecondition) as early:
        d.check_decidable(T0 + timedelta(days=29), "answered")
    assert early.value.reason == "NOTICE_RUNNING"
    with pytest.raises(InvalidArgument) as silent:
        d.check_decidable(T0 + timedelta(days=30), "")
    assert silent.value.field == "reason"
    with pytest.raises(FailedPrecondition) as late:
        d.object("BANKC", "too late", T0 + timedelta(days=30), "m-o3")
    assert late.value.reason == "NOTICE_ENDED"

    d.check_decidable(T0 + timedelta(days=30), "salary claim not supported by statements")
    d.decide("AFC", T0 + timedelta(days=30), "salary claim not supported by statements")
    assert d.state is DistributionState.DECIDED
    with pytest.raises(FailedPrecondition):
        d.withdraw("AFC", T0 + timedelta(days=31), "changed mind")
