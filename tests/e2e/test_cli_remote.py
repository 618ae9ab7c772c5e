"""The read commands over gRPC from a workstation (`--identity DIR`, issue 20 item 8): the
same output as on the hub's host, scoped by the permission matrix (docs/permissions.md), every
failure one line.

One real hub for the module, on its own event loop in a thread (the command line runs its own
loop, as it does at a workstation): the centre's standing rule stops BANKA's case at BANKB,
which holds the money; PAYX reports a second case; the centre lists the mule. Identity
directories for the centre, BANKA, BANKB, PAYX and the regulator are written with
`write_identity`, as an institution's operator would lay them out."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import pytest
from click.testing import CliRunner, Result

from adapters.sdk import HubClient
from adapters.sdk.identity import SIGNING_KEY, write_identity
from hub.cli import main
from hub.system.clock import ManualClock
from stophub.v1 import account_pb2, blacklist_pb2, order_pb2
from tests.conftest import T0
from tests.e2e.conftest import Network, start_network
from tests.e2e.test_cli_json import documented_schemas
from tests.e2e.wire_helpers import report

# The module builds one hub for all its tests: on one worker, it is built once.
pytestmark = pytest.mark.xdist_group("cli_remote")

T = TypeVar("T")
IDENTITIES = ("CENTRE", "BANKA", "BANKB", "PAYX", "REG")


@dataclass
class Hub:
    network: Network
    loop: asyncio.AbstractEventLoop
    identities: dict[str, Path]
    banka_case: str  # reported by BANKA, stopped at BANKB
    payx_case: str  # reported by PAYX
    entry: str

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


def payx_report(now: Any) -> Any:
    pb = report(now, (120_000,))
    pb.transactions[0].payer.CopyFrom(
        account_pb2.AccountRef(
            institution_code="PAYX", account_number="8800000000000001", holder_name="Wang Wu"
        )
    )
    return pb


async def scenario(network: Network) -> tuple[str, str, str]:
    clients: dict[str, HubClient] = {code: network.client(code) for code in network.keys}
    try:
        centre, bank_a, bank_b = clients["CENTRE"], clients["BANKA"], clients["BANKB"]
        await centre.set_auto_stop_rule(
            order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
        )
        first = await bank_a.create_report(report(network.clock.now(), (500_000,)))
        first = await bank_a.verify_report(first.case_id, confirmed=True)
        [stop] = first.orders
        network.clock.advance(timedelta(minutes=2))
        await bank_b.answer_order(
            order_pb2.ExecutionResult(
                order_id=stop.order_id,
                status=order_pb2.EXECUTION_STATUS_EXECUTED,
                amount_held_fen=500_000,
            )
        )
        entry = await centre.publish_list_entry(
            account=("BANKB", "6222020000000002", "Li Si"),
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            reason="account seller",
            source_case_id=first.case_id,
        )
        network.clock.advance(timedelta(minutes=5))
        second = await clients["PAYX"].create_report(payx_report(network.clock.now()))
        return first.case_id, second.case_id, entry.entry.entry_id
    finally:
        for client in clients.values():
            await client.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    directory = tmp_path_factory.mktemp("remote")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    network = run(start_network(directory, ManualClock(T0)))
    try:
        banka_case, payx_case, entry = run(scenario(network))
        identities = {
            code: write_identity(
                directory / code.lower(),
                code,
                network.keys[code],
                network.tls_of(code),
                network.hub_key,
                hub=network.target,
            ).directory
            for code in IDENTITIES
        }
        yield Hub(network, loop, identities, banka_case, payx_case, entry)
    finally:
        run(network.server.stop(0.5))
        network.store.dispose()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def stophub(hub: Hub, *args: str, **obj: Any) -> Result:
    return CliRunner().invoke(
        main, list(args), prog_name="stophub", obj={"clock": hub.network.clock, **obj}
    )


def remote(hub: Hub, code: str, *args: str) -> str:
    """`stophub ARGS --identity DIR` as `code`; its standard output."""
    result = stophub(hub, *args, "--identity", str(hub.identities[code]))
    assert result.exit_code == 0, result.output
    return result.stdout


def local(hub: Hub, *args: str) -> str:
    """The same command on the hub's host, reading its database."""
    result = stophub(hub, *args, "--db", hub.network.database_url)
    assert result.exit_code == 0, result.output
    return result.stdout


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def validated(command: str, output: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(output)
    jsonschema.validate(document, documented_schemas()[command])
    return document


# ---- scoping ---------------------------------------------------------------------------------


def test_the_centre_sees_every_case_as_the_hub_host_does(hub: Hub) -> None:
    over_grpc = validated(
        "stophub case list --json", remote(hub, "CENTRE", "case", "list", "--json")
    )
    assert [c["case_id"] for c in over_grpc["cases"]] == [hub.payx_case, hub.banka_case]
    assert over_grpc == json.loads(local(hub, "case", "list", "--json"))


def test_a_bank_sees_only_its_own_cases(hub: Hub) -> None:
    # Its own: those it reported, and those it holds an order in (BANKB, the stop on its
    # account in Bank A's case; without the victim, as the next tests show).
    for code, own in (
        ("BANKA", [hub.banka_case]),
        ("PAYX", [hub.payx_case]),
        ("BANKB", [hub.banka_case]),
    ):
        document = validated(
            "stophub case list --json", remote(hub, code, "case", "list", "--json")
        )
        assert [c["case_id"] for c in document["cases"]] == own, code
    table = remote(hub, "BANKA", "case", "list")
    assert hub.banka_case in table and hub.payx_case not in table


def test_case_show_over_grpc_is_the_local_view(hub: Hub) -> None:
    over_grpc = validated(
        "stophub case show --json",
        remote(hub, "CENTRE", "case", "show", hub.banka_case.lower(), "--json"),
    )
    assert over_grpc == json.loads(local(hub, "case", "show", hub.banka_case, "--json"))
    assert over_grpc["victim_name"] == "Z********" and over_grpc["held_fen"] == 500_000
    text = remote(hub, "BANKA", "case", "show", hub.banka_case)
    assert "timeline" in text and "report.received" in text
    assert "money trail" not in text  # the reporter sees its trail: drawn, no refusal line
    assert "BANKB" in text and "Zhang San" not in text


def test_an_addressee_sees_the_orders_but_not_the_victim_nor_the_trail(hub: Hub) -> None:
    document = validated(
        "stophub case show --json",
        remote(hub, "BANKB", "case", "show", hub.banka_case, "--json", "--personal-data"),
    )
    assert document["victim_name"] is None and document["linked_cases"] == []
    assert [o["addressed_to"] for o in document["orders"]] == ["BANKB"]
    text = remote(hub, "BANKB", "case", "show", hub.banka_case)
    assert "not shared with BANKB, which holds orders in this case" in text
    assert "money trail: not shared with BANKB (TRAIL_NOT_SHARED)" in text


def test_another_institutions_case_is_a_one_line_refusal(hub: Hub) -> None:
    for code in ("BANKA", "BANKB"):
        result = stophub(
            hub, "case", "show", hub.payx_case, "--identity", str(hub.identities[code])
        )
        line = one_line_error(result)
        assert line.startswith("Error: PERMISSION_DENIED NOT_PARTY_TO_CASE: "), line


def test_sla_over_grpc(hub: Hub) -> None:
    command = "stophub sla --json"
    everyone = validated(command, remote(hub, "CENTRE", "sla", "--all", "--json"))
    assert everyone == json.loads(local(hub, "sla", "--all", "--json"))
    assert {c["responsible"] for c in everyone["clocks"]} >= {"BANKB", "PAYX"}
    own = validated(command, remote(hub, "BANKB", "sla", "--all", "--json"))
    assert own["clocks"] and {c["responsible"] for c in own["clocks"]} == {"BANKB"}
    with_log = validated(command, remote(hub, "CENTRE", "sla", "--case", hub.banka_case, "--json"))
    assert with_log == json.loads(local(hub, "sla", "--case", hub.banka_case, "--json"))
    refused = stophub(
        hub, "sla", "--institution", "banka", "--identity", str(hub.identities["BANKB"])
    )
    assert one_line_error(refused).startswith("Error: PERMISSION_DENIED NOT_RESPONSIBLE: ")


def test_board_over_grpc(hub: Hub) -> None:
    frame = remote(hub, "CENTRE", "board", "--once")
    assert frame == local(hub, "board", "--once")
    assert hub.payx_case in frame and "StopHub board" in frame
    own = remote(hub, "PAYX", "board", "--once")
    assert hub.payx_case in own and hub.banka_case not in own


def test_list_show_over_grpc_is_checked_against_the_signed_checkpoint(hub: Hub) -> None:
    document = validated("stophub list show --json", remote(hub, "REG", "list", "show", "--json"))
    on_host = json.loads(local(hub, "list", "show", "--json"))
    assert [e["entry_id"] for e in document["entries"]] == [hub.entry]
    assert document["entries"][0]["listed_by"] is None  # not in the list's wire form
    on_host["entries"][0]["listed_by"] = None
    assert document == on_host
    table = remote(hub, "BANKA", "list", "show")
    assert "BANKB/************0002" in table and document["clear_digest"] in table


def test_appeal_list_over_grpc(hub: Hub) -> None:
    result = stophub(hub, "appeal", "list", "--identity", str(hub.identities["CENTRE"]))
    if hasattr(HubClient, "list_appeals"):  # AppealService.ListAppeals in the SDK
        assert result.exit_code == 0, result.output
    else:
        assert "not yet supported by this hub" in one_line_error(result)


# ---- failures --------------------------------------------------------------------------------


def test_an_unreachable_hub_is_one_line_naming_it(hub: Hub) -> None:
    result = stophub(
        hub,
        "case",
        "list",
        "--identity",
        str(hub.identities["CENTRE"]),
        "--hub",
        "127.0.0.1:1",
        connect_timeout=1.0,
    )
    line = one_line_error(result)
    assert line.startswith("Error: UNAVAILABLE: ") and "127.0.0.1:1" in line, line
    assert "--hub" in line


def test_a_missing_identity_file_is_one_line(hub: Hub, tmp_path: Path) -> None:
    broken = tmp_path / "banka"
    shutil.copytree(hub.identities["BANKA"], broken)
    (broken / SIGNING_KEY).unlink()
    line = one_line_error(stophub(hub, "sla", "--identity", str(broken)))
    assert str(broken / SIGNING_KEY) in line and "stophub keys generate" in line
    line = one_line_error(stophub(hub, "board", "--once", "--identity", str(tmp_path / "none")))
    assert "no such identity directory" in line


def test_hub_or_as_without_identity_is_a_usage_error(hub: Hub) -> None:
    line = one_line_error(stophub(hub, "case", "list", "--hub", hub.network.target), code=2)
    assert "--identity" in line and "stophub case list --help" in line
    line = one_line_error(stophub(hub, "list", "show", "--as", "BANKA"), code=2)
    assert "--as" in line


def test_as_overrides_the_identity_files_institution(hub: Hub) -> None:
    # BANKA's directory has no TLS pair for BANKB: --as BANKB names the file it lacks.
    result = stophub(
        hub, "case", "list", "--identity", str(hub.identities["BANKA"]), "--as", "bankb"
    )
    assert "bankb-tls.pem" in one_line_error(result)


def test_the_installed_command_prints_one_line_from_stophub_identity(tmp_path: Path) -> None:
    env = {**os.environ, "STOPHUB_IDENTITY": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "case", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nowhere'}: no such identity directory (see docs/console.md)"
    ]
