"""`stophub … --json` against the schemas docs/cli.md documents, and what people see: ids
whole at 80 columns and piped, times in the display zone, ids in any letter case.

One hub database, made once by a real hub over gRPC: two cases reaching the same mule (a
stop held, a listing, an appeal rejected), read by the commands as an operator would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.crypto.public import public_key_to_pem
from hub.system.clock import ManualClock
from stophub.v1 import blacklist_pb2, grade_pb2, lead_pb2, order_pb2
from tests.conftest import T0
from tests.e2e.conftest import start_network
from tests.e2e.wire_helpers import MULE, report

# The module builds one hub for all its tests: on one worker, it is built once.
pytestmark = pytest.mark.xdist_group("cli_json")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def documented_schemas() -> dict[str, dict[str, Any]]:
    """Each `### \\`stophub … --json\\`` section's JSON Schema, by the command it names."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.findall(r"^### `(stophub [^`]+ --json)`\n.*?```json\n(.*?)```", text, re.S | re.M)
    return {command: json.loads(schema) for command, schema in found}


@dataclass
class HubData:
    url: str
    first: str  # the case whose stop holds money at the mule
    second: str  # a later case that reached the same mule
    appeal: str
    entry: str
    hub_pub: str  # the hub's public key file, as an auditor is given it
    lead: str  # BANKA's lead about the mule, which the centre asked more of


def build(directory: Path) -> HubData:
    async def scenario() -> HubData:
        clock = ManualClock(T0)
        network = await start_network(directory, clock)
        clients = {code: network.client(code) for code in network.keys}
        try:
            centre, bank_a, bank_b = clients["CENTRE"], clients["BANKA"], clients["BANKB"]
            await centre.set_auto_stop_rule(
                order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
            )
            first = await bank_a.create_report(report(clock.now(), (500_000,)))
            first = await bank_a.verify_report(first.case_id, confirmed=True)
            [stop] = first.orders
            clock.advance(timedelta(minutes=2))
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
            appeal = await bank_b.file_appeal(
                stop.order_id, "salary account", [("statement.pdf", hashlib.sha256(b"s").digest())]
            )
            await centre.decide_appeal(appeal.appeal_id, False, "the money traces to the victim")
            clock.advance(timedelta(hours=1))
            second = await bank_a.create_report(report(clock.now(), (200_000,)))
            lead = await bank_a.submit_lead(
                lead_pb2.SubmitLeadBody(
                    accounts=[MULE], grade=grade_pb2.GRADE_RED, grounds="fast in, fast out"
                )
            )
            await centre.ask_for_more(lead.name, "since when?")
            network.server.hub.sweep()
            network.server.hub.keep_audit_log()
            hub_pub = directory / "hub.pub"
            hub_pub.write_bytes(
                public_key_to_pem(network.hub_key.algorithm, network.hub_key.public_key)
            )
            return HubData(
                network.database_url,
                first.case_id,
                second.case_id,
                appeal.appeal_id,
                entry.entry.entry_id,
                str(hub_pub),
                lead.name,
            )
        finally:
            for c in clients.values():
                await c.close()
            await network.server.stop(0.5)
            network.store.dispose()

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubData]:
    yield build(tmp_path_factory.mktemp("hub"))


def stophub(hub: HubData, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner(env=env).invoke(
        main, [*args, "--db", hub.url], obj={"clock": ManualClock(T0 + timedelta(hours=2))}
    )
    assert result.exit_code == 0, result.output
    return result.output


JSON_COMMANDS = {
    "stophub case list --json": lambda h: ["case", "list", "--json"],
    "stophub case show --json": lambda h: ["case", "show", h.first, "--json"],
    "stophub sla --json": lambda h: ["sla", "--all", "--json"],
    "stophub appeal list --json": lambda h: ["appeal", "list", "--json"],
    "stophub lead list --json": lambda h: ["lead", "list", "--json"],
    "stophub lead show --json": lambda h: ["lead", "show", h.lead, "--json"],
    "stophub list show --json": lambda h: ["list", "show", "--json"],
    "stophub institution list --json": lambda h: ["institution", "list", "--json"],
    "stophub institution show --json": lambda h: ["institution", "show", "BANKB", "--json"],
    "stophub audit verify --json": lambda h: ["audit", "verify", "--hub-key", h.hub_pub, "--json"],
}


def test_every_listing_command_has_a_documented_schema() -> None:
    schemas = documented_schemas()
    assert sorted(schemas) == sorted(JSON_COMMANDS)
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_json_output_follows_the_documented_schema(hub: HubData, command: str) -> None:
    document = json.loads(stophub(hub, *JSON_COMMANDS[command](hub)))
    jsonschema.validate(document, documented_schemas()[command])


def test_each_json_document_holds_the_data(hub: HubData) -> None:
    cases = json.loads(stophub(hub, "case", "list", "--json"))["cases"]
    assert [c["case_id"] for c in cases] == [hub.second, hub.first], "newest first"
    assert cases[1]["loss_fen"] == 500_000 and cases[1]["held_fen"] == 500_000

    shown = json.loads(stophub(hub, "case", "show", hub.first, "--json"))
    [stop] = shown["orders"]
    mule = {"institution": "BANKB", "number": "************0002", "holder": "L****"}
    assert stop["account"] == mule
    assert stop["held_fen"] == 500_000 and stop["result_status"] == "executed"
    assert shown["linked_cases"] == [
        {"case_id": hub.second, "institution": "BANKB", "number": "************0002"}
    ]

    appeals = json.loads(stophub(hub, "appeal", "list", "--json"))["appeals"]
    assert appeals[0]["appeal_id"] == hub.appeal and appeals[0]["state"] == "rejected"
    assert appeals[0]["against"] == {"kind": "stop", "reference": stop["order_id"]}

    listed = json.loads(stophub(hub, "list", "show", "--json"))
    assert [e["entry_id"] for e in listed["entries"]] == [hub.entry]
    assert listed["entries"][0]["subject"] == "BANKB/************0002"

    with_log = json.loads(stophub(hub, "sla", "--case", hub.first, "--json"))
    assert with_log["clocks"] and all("log" in c for c in with_log["clocks"])
    jsonschema.validate(with_log, documented_schemas()["stophub sla --json"])

    verified = json.loads(stophub(hub, "audit", "verify", "--hub-key", hub.hub_pub, "--json"))
    assert verified["ok"] is True and verified["entries"] == verified["tree_size"] > 0
    assert verified["checkpoints"] > 0 and verified["checkpoints_failed"] == 0


def test_json_masks_personal_data_unless_asked(hub: HubData) -> None:
    masked = stophub(hub, "case", "show", hub.first, "--json")
    for secret in ("Zhang San", "Li Si", "6222020000000002", "6222010000000001"):
        assert secret not in masked
    assert json.loads(masked)["victim_name"] == "Z********"
    full = json.loads(stophub(hub, "case", "show", hub.first, "--json", "--personal-data"))
    assert full["personal_data"] is True and full["victim_name"] == "Zhang San"
    assert full["orders"][0]["account"]["number"] == "6222020000000002"
    listed = stophub(hub, "list", "show", "--json")
    assert "Li Si" not in listed and "6222020000000002" not in listed
    jsonschema.validate(
        json.loads(stophub(hub, "list", "show", "--json", "--personal-data")),
        documented_schemas()["stophub list show --json"],
    )


def test_json_times_are_utc_whatever_the_display_zone(hub: HubData) -> None:
    document = stophub(hub, "--tz", "Asia/Shanghai", "case", "show", hub.first, "--json")
    assert "+08:00" not in document
    assert json.loads(document)["reported_at"].endswith("Z")
    people = stophub(hub, "sla", "--all", "--tz", "Asia/Shanghai")
    assert "+08:00" in people and re.search(r"\d\dZ\b", people) is None


def test_ids_are_whole_at_80_columns_and_piped(hub: HubData) -> None:
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": "80"}
    for args in (
        ("case", "list"),
        ("appeal", "list"),
        ("list", "show"),
        ("sla", "--all"),
        ("case", "show", hub.first),
    ):
        on_screen = re.sub(r"\x1b\[[0-9;]*m", "", stophub(hub, *args, env=terminal))
        assert hub.first in on_screen and "…" not in on_screen, on_screen
        assert max(map(len, on_screen.splitlines())) <= 80, on_screen
        piped = stophub(hub, *args)
        assert hub.first in piped and "…" not in piped, piped
        assert_as_wide_as_needed(piped.splitlines())
    assert hub.appeal in stophub(hub, "appeal", "list", env=terminal)
    assert hub.entry in stophub(hub, "list", "show", env=terminal)


def assert_as_wide_as_needed(lines: list[str]) -> None:
    """No line padded out to a width the content does not reach (a table's title is padded
    to the table's own width, no wider)."""
    assert max(map(len, lines)) == max(len(line.rstrip()) for line in lines), lines


def test_piped_sla_and_board_are_as_wide_as_they_need(hub: HubData) -> None:
    for args in (("sla", "--all"), ("board", "--once")):
        lines = stophub(hub, *args).splitlines()
        assert max(map(len, lines)) < 200, lines
        assert_as_wide_as_needed(lines)


def test_case_ids_and_codes_in_any_letter_case(hub: HubData) -> None:
    shown = stophub(hub, "case", "show", hub.first.lower())
    assert hub.first in shown
    assert hub.first in stophub(hub, "case", "trail", hub.first.lower())
    assert hub.first in stophub(hub, "sla", "--case", hub.first.lower())
    assert '"code": "BANKB"' in stophub(hub, "institution", "show", "bankb", "--json")
    clocks = json.loads(stophub(hub, "sla", "--institution", "bankb", "--all", "--json"))
    assert clocks["clocks"] and {c["responsible"] for c in clocks["clocks"]} == {"BANKB"}
