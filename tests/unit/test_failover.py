"""Several hub addresses in the SDK: how they are read, how one channel is built over them, and
how long a lost stream waits before trying again (adapters/sdk/failover.py)."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk.client import HubClient, HubError
from adapters.sdk.failover import backoff, channel_target, parse_targets
from hub.cli import main
from hub.crypto.keys import PrivateKey


def test_one_target_is_kept_as_given() -> None:
    assert parse_targets("hub.example.cn:7443") == ["hub.example.cn:7443"]
    assert parse_targets("dns:///hub.example.cn:7443") == ["dns:///hub.example.cn:7443"]
    # gRPC's own list form is gRPC's to read, commas and all.
    assert parse_targets("ipv4:10.0.0.1:7443,10.0.0.2:7443") == ["ipv4:10.0.0.1:7443,10.0.0.2:7443"]


def test_several_targets_from_a_string_or_a_list() -> None:
    assert parse_targets(" a.example:1, b.example:2 ,[::1]:3") == [
        "a.example:1",
        "b.example:2",
        "[::1]:3",
    ]
    assert parse_targets(["a.example:1", "a.example:1", "b.example:2"]) == [
        "a.example:1",
        "b.example:2",
    ]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("a.example:1,", "empty hub address"),
        ("a.example", "is not HOST:PORT"),
        ("a.example:port", "is not HOST:PORT"),
        ("a.example:0", "is not HOST:PORT"),
        ("a.example:70000", "is not HOST:PORT"),
        ("::1:7443,b:1", "IPv6 address goes in brackets"),
        ("[::1]7443,b:1", "is not HOST:PORT"),
        ([], "no hub address"),
    ],
)
def test_bad_addresses_are_refused_saying_what_is_expected(given: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_targets(given)  # type: ignore[arg-type]


def test_a_list_becomes_one_static_target_named_after_its_first_entry() -> None:
    table = {"a.example": ["10.0.0.1", "10.0.0.2"], "b.example": ["10.0.0.3", "fd00::3"]}
    built = channel_target(["a.example:7443", "b.example:7444"], lambda h, p: table[h])
    assert built.target == "ipv4:10.0.0.1:7443,10.0.0.2:7443,10.0.0.3:7444"
    assert built.authority == "a.example:7443"
    six = channel_target(["[::1]:1", "[::2]:2"], lambda h, p: [h])
    assert six.target == "ipv6:[::1]:1,[::2]:2"
    assert channel_target(["hub:1"]).target == "hub:1"  # one target: gRPC resolves it


def test_a_list_with_no_resolvable_name_is_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(ValueError, match="none of the hub addresses resolves: a:1"):
        channel_target(["a:1", "b:2"], fail)
    # One unresolvable name among others is left out, not fatal.
    built = channel_target(["a:1", "127.0.0.1:2"], lambda h, p: [] if h == "a" else [h])
    assert built.target == "ipv4:127.0.0.1:2"


def test_backoff_grows_is_capped_and_jittered() -> None:
    # The bounds: half the ceiling and the ceiling.
    low = [backoff(n, 0.2, 10.0, min) for n in range(1, 12)]
    high = [backoff(n, 0.2, 10.0, max) for n in range(1, 12)]
    assert high[:7] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0])
    assert set(high[6:]) == {10.0}
    assert low == pytest.approx([h / 2 for h in high])
    assert backoff(10_000, 0.2, 10.0, max) == 10.0  # no overflow after a long outage
    rng = random.Random(7)
    drawn = [backoff(3, 0.2, 10.0, rng.uniform) for _ in range(200)]
    assert all(0.4 <= d <= 0.8 for d in drawn)
    assert len(set(drawn)) == 200  # jittered: no two banks wait the same
    with pytest.raises(ValueError):
        backoff(0, 0.2, 10.0)


async def test_a_stream_no_replica_takes_says_so_after_give_up_after() -> None:
    with socket.socket() as s:  # two ports where nothing listens
        s.bind(("127.0.0.1", 0))
        first = s.getsockname()[1]
    targets = [f"127.0.0.1:{first}", f"127.0.0.1:{first + 1 if first < 65535 else first - 1}"]
    client = HubClient(
        targets,
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=PrivateKey.generate().public_key,
        witness=False,
    )
    async with (
        client,
        client.deliveries(initial_backoff=0.05, max_backoff=0.1, give_up_after=0.5) as stream,
    ):
        started = time.monotonic()
        with pytest.raises(HubError) as caught:
            await asyncio.wait_for(anext(stream), 10)
        assert 0.5 <= time.monotonic() - started < 5
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert f"no hub at {','.join(targets)} took the delivery stream" in str(caught.value)
    with pytest.raises(ValueError, match="give_up_after"):
        client.deliveries(give_up_after=0)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["board", "--identity", "/nonexistent", "--hub", "hub.example"], "is not HOST:PORT"),
        (["replica", "--hub", "a:1,,b:2", "--institution", "PAYX"], "empty hub address"),
    ],
)
def test_a_bad_hub_list_on_the_command_line_is_a_usage_error(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--hub'" in result.output and says in result.output
    assert "Traceback" not in result.output
