"""docs/personal-data.md across every output: one case with a known victim, mule, onward holder
and account numbers, rendered by every command that can show them. Without --personal-data no
name, ID number, phone or full account number appears; with it, each output shows the people
it holds in full."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.crypto.listkey import ListKey
from hub.domain.wording import mask, mask_name
from hub.service import auditlog
from hub.service.commands import appeal as ap
from hub.service.commands.blacklist import PUBLISH_LIST_ENTRY
from hub.system.policy import load_policy
from stophub.v1 import appeal_pb2, blacklist_pb2

from .test_hub_on_db import VICTIM, Net, net  # noqa: F401  (the fixture)
from .test_pii_at_rest import (
    CHINESE_NAME,
    HOLDER,
    ID_NUMBER,
    MULE_ACCOUNT,
    NAME,
    ONWARD_HOLDER,
    PHONE,
    planted_case,
)

ONWARD_ACCOUNT = "PX-0000000777"
NAMES = (NAME, CHINESE_NAME, ONWARD_HOLDER)
ACCOUNTS = (VICTIM.account_number, MULE_ACCOUNT, ONWARD_ACCOUNT)
PERSONAL = (*NAMES, *ACCOUNTS, ID_NUMBER, PHONE)


@dataclass
class World:
    net: Net
    case_id: str
    tmp: Path

    def run(self, *args: str, ok: bool = True) -> str:
        # Wide: a column cut short would hide what is looked for.
        result = CliRunner(env={"COLUMNS": "400"}).invoke(
            main, [*args, "--db", str(self.net.store.url)], obj={"clock": self.net.clock}
        )
        assert (result.exit_code == 0) is ok, result.output
        return result.output


@pytest.fixture
def world(net: Net, tmp_path: Path) -> World:  # noqa: F811
    """The planted case, its mule's account listed, and the mule's bank's appeal against the
    listing decided with a reason that names the mule; on the shipped clocks."""
    net.hub.clock_policy = load_policy()
    case_id = planted_case(net)
    net.hub.list_key = ListKey.generate()
    listed = net.call(
        "CENTRE",
        PUBLISH_LIST_ENTRY,
        blacklist_pb2.PublishListEntryBody(
            account=HOLDER,
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            reason="account seller",
            source_case_id=case_id,
        ),
        blacklist_pb2.ListEntryRecord,
    )
    appeal = net.call(
        "BANKB",
        ap.FILE_APPEAL,
        appeal_pb2.FileAppealBody(reference=listed.entry.entry_id, grounds="a salary account"),
        appeal_pb2.Appeal,
    )
    net.call(
        "CENTRE",
        ap.DECIDE_APPEAL,
        appeal_pb2.DecideAppealBody(
            appeal_id=appeal.appeal_id,
            decision=appeal_pb2.APPEAL_DECISION_REJECT,
            reason=f"{CHINESE_NAME} sold the account; {ONWARD_HOLDER} cashed out",
        ),
        appeal_pb2.Appeal,
    )
    auditlog.sequence(net.store, net.clock)
    return World(net, case_id, tmp_path)


def _file(world: World, name: str, *args: str) -> Callable[[bool], str]:
    """An output written to a file: what the file holds."""

    def render(personal: bool) -> str:
        path = world.tmp / f"{name}-{personal}"
        world.run(*args, str(path), *(["--personal-data"] if personal else []))
        return path.read_text(encoding="utf-8")

    return render


def _shown(world: World, *args: str) -> Callable[[bool], str]:
    def render(personal: bool) -> str:
        return world.run(*args, *(["--personal-data"] if personal else []))

    return render


def outputs(world: World) -> dict[str, tuple[Callable[[bool], str], tuple[str, ...]]]:
    """Each output that can show people, with what it must show in full with the switch."""
    c = world.case_id
    return {
        "case show": (
            _shown(world, "case", "show", c),
            (NAME, CHINESE_NAME, VICTIM.account_number, MULE_ACCOUNT, ID_NUMBER, PHONE),
        ),
        "case trail": (_shown(world, "case", "trail", c), (*NAMES, *ACCOUNTS)),
        "case trail --svg": (_file(world, "trail.svg", "case", "trail", c, "--svg"),
                             (*NAMES, *ACCOUNTS)),
        "list show": (_shown(world, "list", "show"), (CHINESE_NAME, MULE_ACCOUNT)),
        "appeal list": (_shown(world, "appeal", "list"), (CHINESE_NAME, ONWARD_HOLDER)),
        "report sla --case": (_file(world, "report.html", "report", "sla", "--case", c, "--out"),
                              (CHINESE_NAME,)),
    }  # fmt: skip


def test_no_output_shows_people_without_the_switch_and_each_shows_them_with_it(
    world: World,
) -> None:
    for name, (render, full) in outputs(world).items():
        masked = render(False)
        assert [p for p in PERSONAL if p in masked] == [], name
        assert any(mask_name(n) in masked for n in NAMES), f"{name}: a masked name"
        unmasked = render(True)
        assert [p for p in full if p not in unmasked] == [], name


def test_the_outputs_of_no_one_show_no_one(world: World) -> None:
    c = world.case_id
    for args in (
        ("case", "list"),
        ("sla", "--all"),
        ("sla", "--case", c),
        ("board", "--once"),
        ("institution", "show", "BANKB"),
        ("sla-export",),
        ("sla-export", "--format", "csv"),
    ):
        shown = world.run(*args)
        assert [p for p in PERSONAL if p in shown] == [], args
        assert [n for n in NAMES if mask_name(n) in shown] == [], args


def test_masked_accounts_keep_their_last_four(world: World) -> None:
    trail = world.run("case", "trail", world.case_id)
    for account in ACCOUNTS:
        assert mask(account) in trail


def test_the_audit_export_is_written_only_with_the_switch(world: World) -> None:
    out = world.tmp / "audit.jsonl"
    refused = world.run("audit", "export", "--out", str(out), ok=False)
    assert "personal data" in refused and "--personal-data" in refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    assert not out.exists(), "nothing written"

    world.run("audit", "export", "--out", str(out), "--personal-data")
    payloads = b"".join(
        base64.b64decode(row["payload"])
        for row in map(json.loads, out.read_text().splitlines())
        if row.get("payload")
    )
    # The signed messages are exported as signed: the victim in clear, as evidence.
    assert NAME.encode() in payloads and ID_NUMBER.encode() in payloads


def test_a_listed_person_shows_no_id_number_without_the_switch(world: World) -> None:
    world.net.call(
        "CENTRE",
        PUBLISH_LIST_ENTRY,
        blacklist_pb2.PublishListEntryBody(
            person=blacklist_pb2.ListedPerson(id_number=ID_NUMBER, name=NAME),
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            reason="account seller",
            source_case_id=world.case_id,
        ),
        blacklist_pb2.ListEntryRecord,
    )
    shown = world.run("list", "show")
    assert ID_NUMBER not in shown and ID_NUMBER[-4:] not in shown and NAME not in shown
    assert mask_name(NAME) in shown
    full = world.run("list", "show", "--personal-data")
    assert ID_NUMBER in full and NAME in full
