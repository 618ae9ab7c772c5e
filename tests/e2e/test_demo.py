"""`stophub demo` runs the whole case and leaves a database that `stophub case show` reads."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import Console

from adapters.blacklist import Form, Replica
from hub.cli import main
from hub.cli.demo_story import run_demo
from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import load_private_key
from hub.crypto.listkey import load_list_key_file
from hub.domain.appeals import AppealState
from hub.domain.cases import CaseState, OrderKind, OrderState
from hub.domain.clocks import ClockState
from hub.store.sql import SqlStore
from stophub.v1 import blacklist_pb2


class _Offline:
    """The demo's copy, opened to read it: never syncs, checks checkpoints with the hub's key."""

    def __init__(self, hub_public_key: bytes) -> None:
        self.hub_public_key = hub_public_key

    def sync_list(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise AssertionError("not syncing")

    def open_checkpoint(self, envelope: Any) -> blacklist_pb2.ListCheckpoint:
        assert verify_envelope(envelope, self.hub_public_key)
        return blacklist_pb2.ListCheckpoint.FromString(envelope.body)


async def test_demo_carries_the_case_to_close(tmp_path: Path) -> None:
    out = io.StringIO()
    status = await run_demo(tmp_path / "demo", Console(file=out, width=160))
    text = out.getvalue()
    assert status == 0, text
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            second, case = uow.cases.list(None, 10, None)  # newest first
    finally:
        store.dispose()
    assert case.state is CaseState.CLOSED and second.state is CaseState.CLOSED
    assert case.loss_fen == case.returned_fen == 5_000_000
    # The hub followed the money three layers deep, in the centre's name.
    stops = [o for o in case.orders if o.kind is OrderKind.STOP]
    assert [(o.account_institution, o.layer) for o in stops] == [
        ("BANKB", 1),
        ("PAYX", 2),
        ("BANKA", 3),
    ]
    assert all(o.auto_stop_rule_id and o.authorization_envelope for o in stops)
    assert [o.upstream_order_id for o in stops] == ["", stops[0].order_id, stops[1].order_id]
    assert all(o.state is OrderState.CONVERTED for o in stops)
    assert all(o.answer_envelope for o in case.orders), "every answer is kept as signed bytes"
    # The second victim's money reached the same mule: one share of the mule's freeze each.
    returns = [o for c in (case, second) for o in c.orders if o.kind is OrderKind.RETURN]
    paid = {
        (o.beneficiary_case_id, o.account_institution, o.account_number): o.returned_fen
        for o in returns
        if o.account_institution == "PAYX"
    }
    assert paid == {(second.case_id, "PAYX", "PX88000007"): 400_000}
    assert sum(o.returned_fen for o in returns) == 5_400_000
    assert "money trail of case" in text and "BEYOND REACH" in text
    assert "pro rata" in text and "traced" in text and "pooled" in text
    assert "signed messages of the case" in text and "¥50,000.00 back with the first" in text
    assert "re-verified with the" in text and "all good" in text
    assert re.search(
        r"audit log: \d+ entries in a Merkle tree .*, [1-9]\d* signed checkpoint", text
    )
    assert "intact" in text
    assert "appear nowhere in stophub.db" in text
    assert "serving mutual TLS" in text
    assert (tmp_path / "demo" / f"trail-{case.case_id}.svg").exists()

    # PayX answers its stop 12 minutes (of case time) late: reminded, then breached.
    appeal_ids = list(dict.fromkeys(re.findall(r"A\d{8}-[0-9A-F]{8}", text)))
    key = load_list_key_file(tmp_path / "demo" / "list-key.json")
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            clocks = uow.clocks.query(
                institution="PAYX",
                case_id=case.case_id,
                open_only=False,
                breached_only=False,
                limit=50,
                offset=0,
            )
            late_stop = next(c for c in clocks if c.kind == "stop")
            steps = [e.event for e in uow.clocks.entries([late_stop.clock_id])[late_stop.clock_id]]
            list_state = uow.lists.state()
            appeals = sorted(
                (a for a in (uow.appeals.get(i) for i in appeal_ids) if a is not None),
                key=lambda a: a.filed_at,
            )
            others = uow.clocks.query(
                institution=None,
                case_id=case.case_id,
                open_only=False,
                breached_only=True,
                limit=50,
                offset=0,
            )
    finally:
        store.dispose()
    # The blacklist: three listings, one removed by the upheld appeal; PayX's copy agrees.
    assert list_state.version == 4 and list_state.count == 2
    assert [a.state for a in appeals] == [AppealState.REJECTED, AppealState.UPHELD]
    hub_key = load_private_key(tmp_path / "demo" / "keys" / "hub.key").public_key
    demo_copy = tmp_path / "demo" / "payx-list.db"
    with Replica(demo_copy, _Offline(hub_key), Form.TOKENS, list_key=key) as copy:
        assert copy.version == 4 and copy.entry_count == 2
        assert copy.digest == list_state.token_digest.to_bytes(32, "big")
        assert copy.verify_local().ok
    assert "refused from PayX's own copy" in text and "is no longer listed" in text

    assert late_stop.state is ClockState.MISSED and late_stop.breached
    assert steps == ["started", "reminder", "breach", "missed"]
    assert [c.clock_id for c in others] == [late_stop.clock_id], "only the slow bank breached"
    assert late_stop.order_id == stops[1].order_id, "the wallet's downstream stop"
    assert "case clocks" in text and "clock_breach to CENTRE" in text

    shown = CliRunner().invoke(
        main, ["case", "show", case.case_id, "--db", f"sqlite:///{tmp_path}/demo/stophub.db"]
    )
    assert shown.exit_code == 0, shown.output
    assert "case.closed" in shown.output and "report → verified" in shown.output
