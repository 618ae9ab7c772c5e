"""OutcomeService.GetOutcomeFigures on a real hub, through the SDK: the regulator gets every
institution's figures, a bank its own, a bank naming another is refused as docs/outcomes.md
says, and a bad range is INVALID_ARGUMENT with a message that says what to fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from stophub.v1 import order_pb2, outcome_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report

DAY = outcome_pb2.OUTCOME_PERIOD_DAY


async def test_who_gets_which_outcome_figures(
    network: Network, clients: dict[str, HubClient]
) -> None:
    clock = network.clock
    await clients["CENTRE"].set_auto_stop_rule(
        order_pb2.AutoStopRule(rule_id="AUTO-1", enabled=True, max_amount_fen=100_000_000)
    )
    reported_at = clock.now()
    case = await clients["BANKA"].create_report(report(clock.now(), (3_000_000, 2_000_000)))
    clock.advance(timedelta(minutes=1))
    case = await clients["BANKA"].verify_report(case.case_id)
    clock.advance(timedelta(minutes=2))
    answer = order_pb2.ExecutionResult(
        order_id=case.orders[0].order_id,
        status=order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED,
        reason_code="AM04",
        amount_held_fen=4_500_000,  # what the bank says it held, not the 5,000,000 asked for
    )
    answer.execute_time.FromDatetime(clock.now())
    await clients["BANKB"].answer_order(answer)
    stopped_after = (clock.now() - reported_at).total_seconds()

    day = datetime.combine(reported_at.date(), datetime.min.time(), tzinfo=UTC)
    start, end = day - timedelta(days=1), day + timedelta(days=2)

    # The regulator: BANKA's row per day and for the range, then the total's.
    figures = await clients["REG"].outcome_figures(start, end, period=DAY)
    assert figures.zone == "UTC"
    assert [r.institution for r in figures.rows] == ["BANKA"] * 4 + [""] * 4
    whole = figures.rows[3]
    assert whole.period_start_time.ToDatetime(tzinfo=UTC) == start
    assert whole.period_end_time.ToDatetime(tzinfo=UTC) == end
    f = whole.figures
    assert (f.reports, f.lost_fen) == (1, 5_000_000)
    assert (f.first_layer_stops, f.stopped_first_layer_fen) == (1, 4_500_000)
    assert (f.downstream_stops, f.frozen_fen, f.returned_fen) == (0, 0, 0)
    assert f.has_recovered_share and f.recovered_share == 0.0
    assert f.first_stops == 1
    assert f.first_stop_median.ToTimedelta().total_seconds() == pytest.approx(stopped_after)
    assert f.first_stop_p90.ToTimedelta() == f.first_stop_median.ToTimedelta()
    reported_day = figures.rows[1]
    assert reported_day.period_start_time.ToDatetime(tzinfo=UTC) == day
    assert reported_day.figures.reports == 1
    assert figures.rows[0].figures.reports == 0 and not figures.rows[0].figures.has_recovered_share
    assert figures.rows[7].figures == f, "the total of one institution is its figures"

    # Split in Beijing days: the zone's midnight, and the zone's name as IANA writes it.
    beijing = await clients["REG"].outcome_figures(start, end, period=DAY, zone="asia/shanghai")
    assert beijing.zone == "Asia/Shanghai"
    shanghai = ZoneInfo("Asia/Shanghai")
    reported = next(r for r in beijing.rows if r.institution == "BANKA" and r.figures.reports)
    local_day = reported_at.astimezone(shanghai).date()
    assert reported.period_start_time.ToDatetime(tzinfo=UTC) == datetime.combine(
        local_day, datetime.min.time(), tzinfo=shanghai
    )

    # BANKA gets its own; BANKB its own, which are none; BANKB naming BANKA is refused.
    own = await clients["BANKA"].outcome_figures(start, end)
    assert [r.institution for r in own.rows] == ["BANKA", ""]
    assert own.rows[0].figures == f
    none = await clients["BANKB"].outcome_figures(start, end)
    assert [r.institution for r in none.rows] == ["BANKB", ""]
    assert none.rows[0].figures.reports == 0 and none.rows[0].figures.stopped_first_layer_fen == 0
    with pytest.raises(HubError) as refused:
        await clients["BANKB"].outcome_figures(start, end, institution="BANKA")
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.reason == "NOT_OWN_INSTITUTION"
    assert "only its own outcome figures" in refused.value.message

    # Bad ranges.
    for bad_start, bad_end, words in (
        (end, start, "to_time: the end of the range must come after its start"),
        (start, start + timedelta(days=1001), "ask for at most 1000"),
    ):
        with pytest.raises(HubError) as bad:
            await clients["REG"].outcome_figures(bad_start, bad_end)
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert words in bad.value.message
    with pytest.raises(HubError) as no_zone:
        await clients["REG"].outcome_figures(start, end, zone="Mars/Olympus_Mons")
    assert no_zone.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "zone: is not an IANA time zone" in no_zone.value.message
    with pytest.raises(HubError) as unset:
        await clients["REG"].call("GetOutcomeFigures", outcome_pb2.OutcomeQuery())
    assert unset.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "from_time: is required" in unset.value.message
