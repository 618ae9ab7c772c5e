"""hub.observability: the JSON log format, request ids in log lines, account masking in JSON,
the metrics' database snapshot and its cache, the RPC status mapping and the HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.cli import main
from hub.cli.serve import serve
from hub.observability import logs
from hub.observability.logmask import AccountMask
from hub.observability.metrics import (
    HubMetrics,
    MetricsHttpServer,
    Snapshot,
    SnapshotCollector,
    _status,
    parse_address,
)
from stophub.v1 import case_pb2


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose only handler is the one `--log-format json` installs."""
    stream = io.StringIO()
    logger = logging.getLogger("test-observability")
    logger.propagate = False
    handler = logs.json_handler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_and_message(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.warning("sweep took %d ms", 12)
    [line] = lines(stream)
    assert line["level"] == "WARNING"
    assert line["logger"] == "test-observability"
    assert line["message"] == "sweep took 12 ms"
    when = datetime.fromisoformat(str(line["time"]))
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    # Outside a request there are no ids at all (not empty ones).
    assert not {"case_id", "message_id", "institution", "rpc"} & line.keys()


def test_lines_written_in_a_request_carry_its_ids(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    with logs.scope(institution="BANKA", message_id="m-1", case_id="C20260302-0000ABCD"):
        logger.info("refused")
        with logs.scope(rpc="/stophub.v1.CaseService/GetCase"):  # inner scopes keep the ids
            logger.info("inner")
    logger.info("after")
    first, inner, after = lines(stream)
    assert first["institution"] == "BANKA" and first["message_id"] == "m-1"
    assert first["case_id"] == "C20260302-0000ABCD"
    assert inner["rpc"] == "/stophub.v1.CaseService/GetCase" and inner["message_id"] == "m-1"
    assert "message_id" not in after and "case_id" not in after


def test_ids_follow_the_work_into_a_worker_thread_with_a_copied_context(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """What Runner.call does: the handler thread's lines name the request."""
    logger, stream = json_log
    with ThreadPoolExecutor(1) as pool, logs.scope(institution="PAYX", message_id="m-7"):
        pool.submit(contextvars.copy_context().run, logger.info, "in the worker").result()
        pool.submit(logger.info, "without the context").result()
    copied, bare = lines(stream)
    assert copied["institution"] == "PAYX" and copied["message_id"] == "m-7"
    assert "message_id" not in bare


def test_the_case_id_is_read_from_the_body_only_when_a_line_is_written(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    body = case_pb2.GetCaseBody(case_id="C20260302-00C0FFEE").SerializeToString()
    reads: list[bytes] = []

    def source() -> str | None:
        reads.append(body)
        return logs.case_id_in(body, "stophub.v1.GetCaseBody")

    with logs.scope(message_id="m-2", case_id=source):
        assert reads == []  # nothing written, nothing decoded
        logger.info("one")
        logger.info("two")
    assert len(reads) == 1
    assert [line["case_id"] for line in lines(stream)] == ["C20260302-00C0FFEE"] * 2


def test_case_id_in() -> None:
    body = case_pb2.GetCaseBody(case_id=" C1 ").SerializeToString()
    assert logs.case_id_in(body, "stophub.v1.GetCaseBody") == "C1"
    assert logs.case_id_in(body, case_pb2.GetCaseBody) == "C1"
    assert logs.case_id_in(b"", "stophub.v1.GetCaseBody") is None
    assert logs.case_id_in(b"\xff\xff", "stophub.v1.GetCaseBody") is None  # not protobuf
    assert logs.case_id_in(body, "no.such.Type") is None
    assert logs.case_id_in(b"", "stophub.v1.Report") is None  # a body without a case id


def test_group_commit_lines_carry_no_request_ids(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """A batch's line is written by whichever request leads it: it names none of them."""
    _, stream = json_log
    batching = logging.getLogger("hub.service.batching")
    handler = logs.json_handler(stream)
    batching.addHandler(handler)
    try:
        with logs.scope(institution="BANKA", message_id="m-3"):
            batching.warning("a batch of 3 failed to commit")
    finally:
        batching.removeHandler(handler)
    [line] = lines(stream)
    assert line["logger"] == "hub.service.batching" and "message_id" not in line


def test_account_numbers_are_masked_in_json_lines(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("hold %s at BANKB", "6222020000001234")
    logger.info("listed", extra={"account": "6222020000005678"})
    try:
        raise ValueError("no account 6222020000009999")
    except ValueError:
        logger.exception("failed for 6222020000004321")
    logger.info("where", stack_info=True, extra={"note": "6222020000008888"})
    text = stream.getvalue()
    for number in ("1234", "5678", "9999", "4321", "8888"):
        assert f"622202000000{number}" not in text
    hold, listed, failed, where = lines(stream)
    assert hold["message"] == "hold 6222********1234 at BANKB"
    assert listed["account"] == "6222********5678"
    assert "ValueError: no account 6222********9999" in str(failed["exc_info"])
    assert failed["message"] == "failed for 6222********4321"
    assert where["note"] == "6222********8888" and "stack_info" in where


def test_ids_are_not_masked(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    """A message id may hold a long digit run; it must stay as it is, to be searched for."""
    logger, stream = json_log
    with logs.scope(message_id="msg-20260302090000123"):
        logger.info("x")
    [line] = lines(stream)
    assert line["message_id"] == "msg-20260302090000123"


def test_json_handler_masks_and_adds_ids() -> None:
    handler = logs.json_handler(io.StringIO())
    assert any(isinstance(f, AccountMask) for f in handler.filters)
    assert any(isinstance(f, logs.RequestContextFilter) for f in handler.filters)


def test_cli_options_and_their_environment_variables() -> None:
    """The names the deployment manifests use."""
    by_name = {p.name: p for p in main.params}
    assert by_name["log_format"].envvar == "STOPHUB_LOG_FORMAT"
    assert by_name["log_format"].default == "text"
    served = {p.name: p for p in serve.params}
    assert "--metrics-address" in served["metrics_address"].opts
    assert served["metrics_address"].envvar == "STOPHUB_METRICS_ADDRESS"
    assert "--health-address" in served["health_address"].opts
    assert served["health_address"].envvar == "STOPHUB_HEALTH_ADDRESS"
    assert served["metrics_address"].default is None and served["health_address"].default is None


# ---- the database snapshot ---------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(collector: SnapshotCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in collector.collect():
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_the_snapshot_is_read_at_most_once_per_max_age() -> None:
    reads: list[Snapshot] = []
    state = {"open": 1}

    def read() -> Snapshot:
        reads.append(Snapshot({"verify": state["open"]}, {}, {"verify": 2}, 7))
        return reads[-1]

    now = FakeTime()
    collector = SnapshotCollector(read, max_age=5.0, kinds=["verify", "stop"], monotonic=now)
    assert list(collector.describe())  # registering reads nothing
    assert reads == []
    first = samples(collector)
    assert len(reads) == 1
    assert first[("stophub_clocks_open", (("kind", "verify"),))] == 1
    # Kinds of the policy with no clock yet are there, at 0, for increase() to work.
    assert first[("stophub_clocks_open", (("kind", "stop"),))] == 0
    assert first[("stophub_clock_breaches_total", (("kind", "verify"),))] == 2
    assert first[("stophub_clock_breaches_total", (("kind", "stop"),))] == 0
    assert first[("stophub_blacklist_version", ())] == 7
    state["open"] = 3
    for _ in range(20):  # a scrape storm within max_age: no read
        samples(collector)
    now.now += 4.0
    stale = samples(collector)
    assert len(reads) == 1
    assert stale[("stophub_clocks_open", (("kind", "verify"),))] == 1
    assert stale[("stophub_snapshot_age_seconds", ())] == 4.0
    now.now += 1.0
    fresh = samples(collector)
    assert len(reads) == 2
    assert fresh[("stophub_clocks_open", (("kind", "verify"),))] == 3
    assert fresh[("stophub_snapshot_age_seconds", ())] == 0.0


def test_a_failed_read_keeps_the_last_snapshot_and_waits_too() -> None:
    calls = {"n": 0}

    def read() -> Snapshot:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("database gone")
        return Snapshot({"stop": 2}, {"stop": 1}, {"stop": 1}, 3)

    now = FakeTime()
    collector = SnapshotCollector(read, max_age=5.0, monotonic=now)
    samples(collector)
    now.now += 6.0
    kept = samples(collector)
    assert calls["n"] == 2
    assert kept[("stophub_clocks_open", (("kind", "stop"),))] == 2
    assert kept[("stophub_clocks_overdue", (("kind", "stop"),))] == 1
    assert kept[("stophub_snapshot_errors_total", ())] == 1
    assert kept[("stophub_snapshot_age_seconds", ())] == 6.0
    samples(collector)
    samples(collector)
    assert calls["n"] == 2  # no retry before max_age


def test_no_snapshot_yet_and_the_database_down_exports_no_made_up_figures() -> None:
    def read() -> Snapshot:
        raise OSError("database gone")

    found = samples(SnapshotCollector(read, kinds=["verify"], monotonic=FakeTime()))
    assert not any(name.startswith("stophub_clocks_open") for name, _ in found)
    assert found[("stophub_snapshot_errors_total", ())] == 1


# ---- RPC status codes --------------------------------------------------------------------------


class FakeContext:
    def __init__(self, code: object) -> None:
        self._code = code

    def code(self) -> object:
        return self._code


@pytest.mark.parametrize(
    "code, exc, expected",
    [
        (None, None, "OK"),
        (grpc.StatusCode.OK, None, "OK"),
        (grpc.StatusCode.NOT_FOUND, Exception("abort"), "NOT_FOUND"),
        (5, Exception("abort"), "NOT_FOUND"),  # the numeric form some versions keep
        (None, RuntimeError("bug"), "UNKNOWN"),
        (grpc.StatusCode.OK, RuntimeError("bug"), "UNKNOWN"),
        (None, asyncio.CancelledError(), "CANCELLED"),
    ],
)
def test_status_of_a_finished_call(code: object, exc: BaseException | None, expected: str) -> None:
    assert _status(FakeContext(code), exc) == expected


# ---- HTTP ----------------------------------------------------------------------------------------


def test_parse_address() -> None:
    assert parse_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_address("[::]:9464") == ("::", 9464)
    assert parse_address(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:", "host:port"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_metrics_are_served_at_slash_metrics_only() -> None:
    metrics = HubMetrics()
    metrics.rpc_done("/stophub.v1.CaseService/GetCase", "NOT_FOUND", 0.002)
    metrics.streams_connected(2)
    metrics.delivery_acknowledged(3.0)
    http = MetricsHttpServer(metrics.registry, "127.0.0.1:0")
    try:
        base = f"http://127.0.0.1:{http.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/", timeout=5)
        assert missing.value.code == 404
    finally:
        http.stop()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    method = ("method", "/stophub.v1.CaseService/GetCase")
    assert values[("stophub_rpc_handled_total", (("code", "NOT_FOUND"), method))] == 1
    assert values[("stophub_rpc_duration_seconds_count", (("code", "NOT_FOUND"), method))] == 1
    assert values[("stophub_delivery_streams_connected", ())] == 2
    assert values[("stophub_delivery_lag_seconds_sum", ())] == 3.0


def test_two_hubs_in_one_process_keep_their_own_figures() -> None:
    one, two = HubMetrics(), HubMetrics()
    one.streams_connected(1)
    assert one.registry.get_sample_value("stophub_delivery_streams_connected") == 1
    assert two.registry.get_sample_value("stophub_delivery_streams_connected") == 0


# ---- health --------------------------------------------------------------------------------------


async def test_health_turns_not_serving_while_the_probe_fails_or_hangs() -> None:
    from grpc_health.v1 import health_pb2
    from grpc_health.v1._async import HealthServicer

    from hub.observability.health import DatabaseHealth

    servicer = HealthServicer()
    names = ("", "stophub.v1.CaseService")
    state = {"mode": "up"}
    release = threading.Event()
    hung: list[int] = []

    def probe() -> None:
        if state["mode"] == "down":
            raise OSError("connection refused\nsecond line")
        if state["mode"] == "hang":
            hung.append(1)
            release.wait(10)

    changes: list[bool] = []
    health = DatabaseHealth(servicer, names, probe, timeout=0.2, on_change=changes.append)

    async def statuses() -> set[int]:
        found = set()
        for name in names:
            answer = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
            found.add(answer.status)
        return found

    try:
        assert await health.check() is True
        assert await statuses() == {health_pb2.HealthCheckResponse.SERVING}
        state["mode"] = "down"
        assert await health.check() is False
        assert await statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
        state["mode"] = "up"
        assert await health.check() is True
        state["mode"] = "hang"  # a database host that vanished: the probe never answers
        assert await health.check() is False
        assert await health.check() is False
        assert len(hung) == 1  # the second check waited for the same probe
        assert await statuses() == {health_pb2.HealthCheckResponse.NOT_SERVING}
        state["mode"] = "up"
        release.set()
        assert await health.check() is True
        assert changes == [True, False, True, False, True]
    finally:
        release.set()
        await health.stop()


def test_a_worker_of_serve_workers_names_itself_in_every_json_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test-observability-worker")
    logger.propagate = False
    handler = logs.json_handler(stream, worker=2)
    logger.addHandler(handler)
    try:
        logger.warning("draining")
    finally:
        logger.removeHandler(handler)
    (line,) = lines(stream)
    assert line["worker"] == 2 and line["message"] == "draining"
    # A hub that is not a worker writes no such field at all.
    stream2 = io.StringIO()
    logger.addHandler(plain := logs.json_handler(stream2))
    try:
        logger.warning("alone")
    finally:
        logger.removeHandler(plain)
    assert "worker" not in lines(stream2)[0]
