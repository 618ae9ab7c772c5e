"""The SQL store on SQLite and PostgreSQL: what goes in comes back, and a unit of work is atomic."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from hub.domain.cases import (
    AccountRef,
    Case,
    CaseState,
    Execution,
    ExecutionStatus,
    FraudTransaction,
    FreezeCommand,
    OnwardTransfer,
    Order,
    OrderKind,
    OrderState,
    Policy,
    ReleaseCommand,
    Report,
    ReturnCommand,
    StopCommand,
    VerificationOutcome,
    add_months,
)
from hub.domain.clocks import CaseClock
from hub.domain.institutions import (
    ContactRole,
    DutyContact,
    Institution,
    InstitutionKind,
    KeyState,
)
from hub.domain.rules import AutoStopRule
from hub.service.ports import AuditEntry, Conflict, InboundRecord
from hub.store.sql import SqlStore
from hub.store.tables import audit_log, cases, deliveries, inbound_messages

# Times carry microseconds, so truncation anywhere shows up as inequality.
T = datetime(2026, 3, 2, 9, 0, 0, 123457, tzinfo=UTC)
BEIJING = timezone(timedelta(hours=8))
POLICY = Policy()
KINDS = {
    "CENTRE": InstitutionKind.ANTI_FRAUD_CENTRE,
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "PAYX": InstitutionKind.PAYMENT_INSTITUTION,
}
VICTIM = AccountRef("BANKA", "6222010000000001", "Zhang San")
MULE_B = AccountRef("BANKB", "6222020000000002", "Li Si")
MULE_P = AccountRef("PAYX", "PX-0000000003", "Wang Wu")
BLOB = bytes(range(256)) * 3 + b"\x00\x00\xff"  # every byte value, NULs included


# ---- builders -----------------------------------------------------------------------------


def contacts(code: str) -> list[DutyContact]:
    return [
        DutyContact(ContactRole.PRIMARY, f"{code} duty A", "+86-10-5550-0001", f"a@{code}.cn"),
        DutyContact(ContactRole.BACKUP, f"{code} duty B", "+86-10-5550-0002"),
    ]


@pytest.fixture
def members(store: SqlStore) -> SqlStore:
    """The institutions the cases refer to (foreign keys), committed."""
    with store() as uow:
        for code, kind in KINDS.items():
            uow.institutions.add(Institution.register(code, code, kind, T, contacts(code)))
        uow.commit()
    return store


def tx(
    payee: AccountRef, amount: int, at: datetime, payer: AccountRef = VICTIM, ref: str = ""
) -> FraudTransaction:
    return FraudTransaction(
        transaction_time=at,
        amount_fen=amount,
        payer_institution=payer.institution_code,
        payer_account=payer.account_number,
        payer_name=payer.holder_name,
        payee_institution=payee.institution_code,
        payee_account=payee.account_number,
        payee_name=payee.holder_name,
        channel="mobile_banking",
        reference=ref,
    )


def opened(
    case_id: str, now: datetime, *, reporter: AccountRef = VICTIM, payee: AccountRef = MULE_B
) -> Case:
    report = Report(
        victim_name=reporter.holder_name,
        victim_id_number="110101199001011234",
        victim_phone="13800000000",
        fraud_type="impersonating_officials",
        victim_report_time=(now - timedelta(minutes=3)).astimezone(BEIJING),
        description="caller posing as police asked for a 'safe account' transfer",
        transactions=[tx(payee, 1_000_000, now - timedelta(minutes=20), reporter, "R-1")],
    )
    case = Case.open(
        case_id,
        reporter.institution_code,
        report,
        now=now,
        message_id=f"m-{case_id}",
        institutions=KINDS,
    )
    case.report_envelope = BLOB + case_id.encode()
    return case


def executed(held: int = 0, **kw: Any) -> Execution:
    values: dict[str, Any] = {
        "status": ExecutionStatus.EXECUTED,
        "reason_code": "",
        "reason": "",
        "amount_held_fen": held,
        "available_balance_fen": 0,
        "amount_released_fen": 0,
        "amount_returned_fen": 0,
        "execute_time": None,
        "onward": [],
    }
    values.update(kw)
    return Execution(**values)


def full_case(case_id: str = "C20260302-FULL") -> Case:
    """A case through every order kind, built with the domain methods as the handlers do."""
    t = T
    report = Report(
        victim_name="Zhang San",
        victim_id_number="110101199001011234",
        victim_phone="13800000000",
        fraud_type="impersonating_officials",
        victim_report_time=(t - timedelta(minutes=5)).astimezone(BEIJING),
        description="说是公安局的人, asked for a 'safe account' transfer",
        transactions=[
            tx(MULE_B, 3_000_000, t - timedelta(minutes=30, microseconds=7), ref="A-TX-1"),
            tx(MULE_B, 2_000_000, t - timedelta(minutes=25), ref="A-TX-2"),
            tx(MULE_P, 800_000, t - timedelta(minutes=21, microseconds=999_999), ref="A-TX-3"),
        ],
    )
    case = Case.open(case_id, "BANKA", report, now=t, message_id="m-report", institutions=KINDS)
    case.report_envelope = BLOB
    t += timedelta(minutes=1, microseconds=1)
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=t, message_id="m-verify")
    t += timedelta(seconds=1, microseconds=10)
    stop_b = case.issue(
        f"{case_id}-O001",
        StopCommand(
            MULE_B,
            5_000_000,
            [(x.transaction_time, x.amount_fen) for x in case.transactions[:2]],
        ),
        issued_by="CENTRE",
        now=t,
        message_id="m-verify",
        institutions=KINDS,
        policy=POLICY,
        auto_stop_rule_id="RULE-1",
    )
    stop_b.authorization_envelope = b"rule\x00envelope"
    stop_p = case.issue(
        f"{case_id}-O002",
        StopCommand(MULE_P, 800_000, [(case.transactions[2].transaction_time, 800_000)]),
        issued_by="CENTRE",
        now=t,
        message_id="m-stop-p",
        institutions=KINDS,
        policy=POLICY,
        note="second layer-1 account",
    )
    stop_p.origin_envelope = b"\xff" * 40
    t += timedelta(minutes=2, microseconds=3)
    case.answer(
        stop_b.order_id,
        "BANKB",
        executed(
            5_000_000,
            available_balance_fen=12_345,
            execute_time=(t - timedelta(seconds=10)).astimezone(BEIJING),
            onward=[
                OnwardTransfer(
                    t - timedelta(minutes=15, microseconds=5),
                    1_500_000,
                    "PAYX",
                    "PX-0000000099",
                    "Zhao Liu",
                    "B-OUT-1",
                ),
                OnwardTransfer(
                    t - timedelta(minutes=14), 200_000, "BANKA", "6222010000000077", "Sun Qi"
                ),
            ],
        ),
        now=t,
        message_id="m-answer-stop-b",
        policy=POLICY,
    )
    stop_b.answer_envelope = b"answer-b" + BLOB
    case.answer(
        stop_p.order_id, "PAYX", executed(800_000), now=t, message_id="m-ans-p", policy=POLICY
    )
    t += timedelta(hours=3, microseconds=11)
    freeze = case.issue(
        f"{case_id}-O003",
        FreezeCommand(MULE_B, 5_000_000, "LA-2026-0001", "Chaoyang PSB", 6, stop_b.order_id),
        issued_by="CENTRE",
        now=t,
        message_id="m-freeze",
        institutions=KINDS,
        policy=POLICY,
    )
    case.answer(
        freeze.order_id, "BANKB", executed(5_000_000), now=t, message_id="m-af", policy=POLICY
    )
    release = case.issue(
        f"{case_id}-O004",
        ReleaseCommand(stop_p.order_id, "funds unrelated to the case"),
        issued_by="CENTRE",
        now=t,
        message_id="m-release",
        institutions=KINDS,
        policy=POLICY,
    )
    case.answer(
        release.order_id,
        "PAYX",
        executed(amount_released_fen=800_000),
        now=t,
        message_id="m-ar",
        policy=POLICY,
    )
    t += timedelta(days=2, microseconds=13)
    ret = case.issue(
        f"{case_id}-O005",
        ReturnCommand(freeze.order_id, VICTIM, 5_000_000),
        issued_by="CENTRE",
        now=t,
        message_id="m-return",
        institutions=KINDS,
        policy=POLICY,
    )
    case.answer(
        ret.order_id,
        "BANKB",
        executed(amount_returned_fen=5_000_000),
        now=t,
        message_id="m-aret",
        policy=POLICY,
    )
    assert case.close_if_settled(t)
    return case


def snapshot(value: Any) -> Any:
    """Plain data of a mapped domain object graph, for equality checks."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: snapshot(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, list | tuple):
        return [snapshot(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def datetimes(value: Any) -> Iterator[datetime]:
    if isinstance(value, dict):
        for v in value.values():
            yield from datetimes(v)
    elif isinstance(value, list):
        for v in value:
            yield from datetimes(v)
    elif isinstance(value, datetime):
        yield value


def count(store: SqlStore, table: Any) -> int:
    with store.read_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# ---- institutions -----------------------------------------------------------------------------


def test_institution_with_keys_and_contacts_round_trips(store: SqlStore) -> None:
    created = T.astimezone(BEIJING)  # any aware time in, UTC out
    inst = Institution.register(
        "BANKA", "Bank A 甲银行", InstitutionKind.BANK, created, contacts("BANKA")
    )
    inst.add_key("k-old", "ed25519", BLOB[:32], T - timedelta(days=30, microseconds=1))
    inst.add_key("k-new", "ecdsa-p256", BLOB[100:165], T + timedelta(microseconds=1))
    inst.revoke_key("k-old", T + timedelta(seconds=5, microseconds=999_999))
    with store() as uow:
        uow.institutions.add(inst)
        uow.institutions.add(
            Institution.register("CENTRE", "Centre", KINDS["CENTRE"], T, contacts("C"))
        )
        uow.commit()
    expected = snapshot(inst)

    with store(read_only=True) as uow:
        loaded = uow.institutions.get("BANKA")
        assert loaded is not None and loaded is not inst
        got = snapshot(loaded)
        assert uow.institutions.kinds() == {
            "BANKA": InstitutionKind.BANK,
            "CENTRE": KINDS["CENTRE"],
        }
        assert [i.code for i in uow.institutions.list(1, None)] == ["BANKA"]
        assert [i.code for i in uow.institutions.list(5, "BANKA")] == ["CENTRE"]
        assert uow.institutions.get("NOPE") is None
    assert got == expected
    assert [k["key_id"] for k in got["keys"]] == ["k-old", "k-new"]  # by created_at
    assert got["keys"][0]["state"] is KeyState.REVOKED
    assert got["keys"][0]["revoked_at"] == T + timedelta(seconds=5, microseconds=999_999)
    assert got["keys"][1]["public_key"] == BLOB[100:165]
    assert [(c["position"], c["role"]) for c in got["contacts"]] == [
        (0, ContactRole.PRIMARY),
        (1, ContactRole.BACKUP),
    ]
    assert all(d.tzinfo is not None and d.utcoffset() == timedelta(0) for d in datetimes(got))
    assert got["created_at"] == T and got["created_at"].tzinfo is not None


# ---- cases ------------------------------------------------------------------------------------


def test_case_with_orders_and_events_round_trips(members: SqlStore) -> None:
    case = full_case()
    with members() as uow:
        uow.cases.add(case)
        uow.commit()
    expected = snapshot(case)

    with members(read_only=True) as uow:
        loaded = uow.cases.get(case.case_id)
        assert loaded is not None and loaded is not case
        got = snapshot(loaded)

    assert got == expected
    # Spot checks on what the comparison covers, so a vacuous snapshot cannot pass.
    assert got["state"] is CaseState.CLOSED
    assert len(got["transactions"]) == 3 and len(got["orders"]) == 5
    assert len(got["events"]) == len(case.events) >= 12
    assert [e["sequence"] for e in got["events"]] == list(range(1, len(case.events) + 1))
    orders = {o["order_id"].rsplit("-", 1)[1]: o for o in got["orders"]}
    assert [o["kind"] for o in got["orders"]] == [
        OrderKind.STOP,
        OrderKind.STOP,
        OrderKind.FREEZE,
        OrderKind.RELEASE,
        OrderKind.RETURN,
    ]
    assert [o["state"] for o in got["orders"]] == [
        OrderState.CONVERTED,
        OrderState.RELEASED,
        OrderState.RETURNED,
        OrderState.COMPLETED,
        OrderState.COMPLETED,
    ]
    stop = orders["O001"]
    assert [f["amount_fen"] for f in stop["facts"]] == [3_000_000, 2_000_000]
    assert stop["facts"][0]["transaction_time"] == T - timedelta(minutes=30, microseconds=7)
    assert [(o["to_account"], o["reference"]) for o in stop["onward"]] == [
        ("PX-0000000099", "B-OUT-1"),
        ("6222010000000077", ""),
    ]
    assert stop["auto_stop_rule_id"] == "RULE-1"
    assert stop["authorization_envelope"] == b"rule\x00envelope"
    assert stop["answer_envelope"] == b"answer-b" + BLOB
    assert stop["result_status"] is ExecutionStatus.EXECUTED
    assert orders["O002"]["origin_envelope"] == b"\xff" * 40
    assert orders["O002"]["auto_stop_rule_id"] is None
    assert orders["O003"]["expires_at"] == add_months(orders["O003"]["effective_at"], 6)
    assert got["report_envelope"] == BLOB
    assert got["description"].startswith("说是公安局的人")
    for d in datetimes(got):
        assert d.tzinfo is not None and d.utcoffset() == timedelta(0), d
    assert any(d.microsecond for d in datetimes(got))
    assert got["created_at"] == T and got["created_at"].microsecond == 123457
    assert got["victim_report_time"] == T - timedelta(minutes=5)


def test_case_update_through_a_second_unit_of_work(members: SqlStore) -> None:
    with members() as uow:
        uow.cases.add(opened("C1", T))
        uow.commit()
    later = T + timedelta(minutes=1, microseconds=1)
    with members() as uow:
        case = uow.cases.get("C1", lock=True)
        assert case is not None
        case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=later, message_id="m-v")
        stop = case.issue(
            "C1-O001",
            StopCommand(MULE_B, 1_000_000, [(case.transactions[0].transaction_time, 1_000_000)]),
            issued_by="CENTRE",
            now=later,
            message_id="m-s",
            institutions=KINDS,
            policy=POLICY,
        )
        assert stop.order_id == "C1-O001"
        uow.commit()
    with members(read_only=True) as uow:
        case = uow.cases.get("C1")
        assert case is not None
        assert case.state is CaseState.VERIFIED and case.verified_at == later
        assert [e.kind for e in case.events] == [
            "report.received",
            "report.verified",
            "order.issued",
        ]
        assert [o.order_id for o in case.orders] == ["C1-O001"]
        assert case.orders[0].facts[0].amount_fen == 1_000_000


def test_naive_datetime_is_refused(members: SqlStore) -> None:
    case = opened("C-NAIVE", T)
    case.verified_at = datetime(2026, 3, 2, 9, 1)  # naive
    with members() as uow:
        uow.cases.add(case)
        with pytest.raises(StatementError) as info:
            uow.commit()
    assert isinstance(info.value.orig, ValueError)
    assert "naive" in str(info.value.orig)
    with members() as uow, pytest.raises(StatementError):
        uow.outbox.add("BANKA", "order", None, b"x", datetime(2026, 3, 2, 9, 1))
    with members() as uow, pytest.raises(StatementError):
        uow.audit.append(AuditEntry("admin", "op", "", "x"), datetime(2026, 3, 2, 9, 1))
        uow.commit()  # audit rows are inserted together, at the commit
    assert count(members, cases) == 0
    assert count(members, deliveries) == 0
    assert count(members, audit_log) == 0


def test_orders_come_back_ordered_by_order_id(members: SqlStore) -> None:
    case = opened("C-ORD", T)
    case.transactions.append(
        tx(MULE_P, 500, T - timedelta(minutes=10), ref="R-2")
    )  # a second layer-1 account
    case.transactions[-1].position = 1
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=T, message_id="m-v")
    for order_id, account, at in (
        ("C-ORD-O009", MULE_B, case.transactions[0].transaction_time),
        ("C-ORD-O002", MULE_P, case.transactions[1].transaction_time),
        ("C-ORD-O010", MULE_B, case.transactions[0].transaction_time),
    ):
        case.issue(
            order_id,
            StopCommand(account, 500, [(at, 500)]),
            issued_by="CENTRE",
            now=T,
            message_id=f"m-{order_id}",
            institutions=KINDS,
            policy=POLICY,
        )
    assert [o.order_id for o in case.orders] == ["C-ORD-O009", "C-ORD-O002", "C-ORD-O010"]
    with members() as uow:
        uow.cases.add(case)
        uow.commit()
    with members(read_only=True) as uow:
        loaded = uow.cases.get("C-ORD")
        assert loaded is not None
        assert [o.order_id for o in loaded.orders] == ["C-ORD-O002", "C-ORD-O009", "C-ORD-O010"]
        assert uow.cases.case_id_of_order("C-ORD-O010") == "C-ORD"
        assert uow.cases.case_id_of_order("C-ORD-O002") == "C-ORD"
        assert uow.cases.case_id_of_order("C-ORD-O003") is None
        assert uow.cases.case_id_of_order("C-ORD") is None
        assert uow.cases.get("C-NONE") is None


def test_list_pages_by_created_at_then_case_id_descending(members: SqlStore) -> None:
    payx_victim = AccountRef("PAYX", "PX-0000000001", "Zhou Ba")
    plan = [
        # case id, created_at, reporter, verified
        ("C-A", T, VICTIM, False),
        ("C-B", T + timedelta(microseconds=1), VICTIM, True),
        ("C-C", T + timedelta(minutes=1), payx_victim, False),
        ("C-D", T + timedelta(minutes=1), VICTIM, True),  # tie on created_at with C-C and C-E
        ("C-E", T + timedelta(minutes=1), VICTIM, False),
        ("C-F", T + timedelta(hours=1), VICTIM, True),
        ("C-G", T - timedelta(days=1), payx_victim, True),
        ("C-H", T + timedelta(hours=2), VICTIM, False),
    ]
    with members() as uow:
        for case_id, at, reporter, verified in plan:
            case = opened(case_id, at.astimezone(BEIJING), reporter=reporter)
            if verified:
                case.verify(
                    reporter.institution_code,
                    VerificationOutcome.CONFIRMED,
                    "",
                    now=at,
                    message_id="m-v",
                )
            uow.cases.add(case)
        uow.commit()

    def order(rows: list[tuple[str, datetime, AccountRef, bool]]) -> list[str]:
        return [r[0] for r in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]

    def walk(state: CaseState | None, reporter: str | None, size: int) -> list[str]:
        seen: list[str] = []
        after = None
        with members(read_only=True) as uow:
            for _ in range(20):
                page = uow.cases.list(state, size, after, reporter)
                assert len(page) <= size
                seen += [c.case_id for c in page]
                if len(page) < size:
                    return seen
                after = (page[-1].created_at, page[-1].case_id)
        raise AssertionError("paging did not end")

    everything = order(plan)
    assert everything == ["C-H", "C-F", "C-E", "C-D", "C-C", "C-B", "C-A", "C-G"]
    for size in (1, 2, 3, 8, 50):
        assert walk(None, None, size) == everything
    assert walk(None, "BANKA", 2) == order([p for p in plan if p[2] is VICTIM])
    assert walk(None, "PAYX", 1) == ["C-C", "C-G"]
    assert walk(CaseState.VERIFIED, None, 2) == order([p for p in plan if p[3]])
    assert walk(CaseState.REPORTED, "BANKA", 2) == ["C-H", "C-E", "C-A"]
    assert walk(CaseState.CLOSED, None, 2) == []
    assert walk(None, "BANKB", 5) == []
    # A cursor given in another zone means the same instant.
    with members(read_only=True) as uow:
        after = ((T + timedelta(minutes=1)).astimezone(BEIJING), "C-D")
        assert [c.case_id for c in uow.cases.list(None, 10, after)] == ["C-C", "C-B", "C-A", "C-G"]


# ---- outbox -----------------------------------------------------------------------------------


def test_outbox_sequences_pending_ack_and_mark_sent(members: SqlStore) -> None:
    with members() as uow:
        a1 = uow.outbox.add("BANKA", "order", "C1", b"a1" + BLOB, T)
        b1 = uow.outbox.add("BANKB", "order", None, b"b1", T)
        a2 = uow.outbox.add("BANKA", "report_received", "C1", b"a2", T)
        uow.commit()
    with members() as uow:
        a3 = uow.outbox.add("BANKA", "case_closed", "C2", b"a3", T + timedelta(seconds=1))
        b2 = uow.outbox.add("BANKB", "order", "C1", b"b2", T)
        uow.commit()
    assert a1 < b1 < a2 < a3 < b2

    with members(read_only=True) as uow:
        pending = uow.outbox.pending("BANKA", 100)
        assert [p.sequence for p in pending] == [a1, a2, a3]
        assert [p.envelope for p in pending] == [b"a1" + BLOB, b"a2", b"a3"]
        assert {p.recipient for p in pending} == {"BANKA"}
        assert [p.attempts for p in pending] == [0, 0, 0]
        assert [p.sequence for p in uow.outbox.pending("BANKA", 2)] == [a1, a2]
        assert [p.sequence for p in uow.outbox.pending("BANKB", 100)] == [b1, b2]
        assert uow.outbox.pending("CENTRE", 100) == []

    with members() as uow:
        uow.outbox.mark_sent([a1, a2], T + timedelta(seconds=2))
        uow.commit()
    with members() as uow:
        uow.outbox.mark_sent([a1], T + timedelta(seconds=9))
        uow.outbox.mark_sent([], T)
        uow.commit()
    with members(read_only=True) as uow:
        assert [(p.sequence, p.attempts) for p in uow.outbox.pending("BANKA", 10)] == [
            (a1, 2),
            (a2, 1),
            (a3, 0),
        ]
        first_sent = dict(
            uow.session.execute(  # type: ignore[attr-defined]
                select(deliveries.c.sequence, deliveries.c.first_sent_at)
            ).all()
        )
    assert first_sent[a1] == T + timedelta(seconds=2)  # the first send, not the latest
    assert first_sent[a3] is None

    with members() as uow:
        assert uow.outbox.ack("BANKB", [a1, a2], T) == 0  # not BANKB's rows
        assert uow.outbox.ack("BANKA", [a1, a3, b1, 999_999], T + timedelta(seconds=3)) == 2
        assert uow.outbox.ack("BANKA", [], T) == 0
        uow.commit()
    with members() as uow:
        assert uow.outbox.ack("BANKA", [a1, a2], T) == 1  # a1 was acknowledged already
        uow.commit()
    with members(read_only=True) as uow:
        assert uow.outbox.pending("BANKA", 10) == []
        assert [p.sequence for p in uow.outbox.pending("BANKB", 10)] == [b1, b2]
        acked = dict(
            uow.session.execute(  # type: ignore[attr-defined]
                select(deliveries.c.sequence, deliveries.c.acked_at)
            ).all()
        )
    assert acked[a1] == T + timedelta(seconds=3)
    assert acked[b1] is None and acked[b2] is None


def test_mark_sent_time_goes_through_the_utc_column_type(
    members: SqlStore, request: pytest.FixtureRequest
) -> None:
    # first_sent_at is written as func.coalesce(first_sent_at, :now): the bound `now` does
    # not take the column's UTCDateTime type, so it is neither refused when naive nor
    # converted to UTC (SQLite stores the local wall time of an aware non-UTC time).
    with members() as uow:
        seq = uow.outbox.add("BANKA", "order", None, b"x", T)
        seq2 = uow.outbox.add("BANKA", "order", None, b"y", T)
        uow.commit()
    with members() as uow:
        uow.outbox.mark_sent([seq], T.astimezone(BEIJING))
        uow.commit()
    with members(read_only=True) as uow:
        stored = uow.session.execute(  # type: ignore[attr-defined]
            select(deliveries.c.first_sent_at).where(deliveries.c.sequence == seq)
        ).scalar_one()
    naive_refused = False
    try:
        with members() as uow:
            uow.outbox.mark_sent([seq2], datetime(2026, 3, 2, 9, 0))
            uow.commit()
    except (StatementError, ValueError):
        naive_refused = True
    assert stored == T
    assert naive_refused


# ---- inbound messages -------------------------------------------------------------------------


def test_inbound_record_round_trips(members: SqlStore) -> None:
    digest = bytes(range(32))
    with members() as uow:
        assert uow.inbound.get("BANKA", "m-1") is None
        uow.inbound.add("BANKA", "m-1", InboundRecord(digest, "stophub.v1.Report", BLOB), T)
        uow.inbound.add("BANKB", "m-1", InboundRecord(digest[::-1], "t", b""), T)  # other sender
        uow.inbound.add("BANKA", "m-2", InboundRecord(digest, "t", b"\x00"), T)
        uow.commit()
    with members(read_only=True) as uow:
        assert uow.inbound.get("BANKA", "m-1") == InboundRecord(digest, "stophub.v1.Report", BLOB)
        assert uow.inbound.get("BANKB", "m-1") == InboundRecord(digest[::-1], "t", b"")
        assert uow.inbound.get("BANKA", "m-2") == InboundRecord(digest, "t", b"\x00")
        assert uow.inbound.get("BANKA", "m-3") is None


def test_duplicate_inbound_message_is_a_conflict(members: SqlStore) -> None:
    record = InboundRecord(b"d" * 32, "stophub.v1.Report", b"first answer")
    with members() as uow:
        uow.inbound.add("BANKA", "m-dup", record, T)
        uow.commit()
    with pytest.raises(Conflict), members() as uow:
        uow.inbound.add("BANKA", "m-dup", InboundRecord(b"e" * 32, "t", b"second"), T)
        uow.commit()
    with members(read_only=True) as uow:
        assert uow.inbound.get("BANKA", "m-dup") == record


# ---- atomicity ----------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_failure_after_writing_state_audit_and_outbox_leaves_nothing(members: SqlStore) -> None:
    with pytest.raises(Boom), members() as uow:
        uow.cases.add(opened("C-LOST", T))
        uow.audit.append(AuditEntry("received", "BANKA", "m-lost", "x", BLOB, "C-LOST"), T)
        uow.outbox.add("CENTRE", "report_received", "C-LOST", BLOB, T)
        uow.inbound.add("BANKA", "m-lost", InboundRecord(b"d" * 32, "t", b"r"), T)
        uow.session.flush()  # type: ignore[attr-defined]  # the case rows are written too
        raise Boom
    assert count(members, cases) == 0
    assert count(members, audit_log) == 0
    assert count(members, deliveries) == 0
    assert count(members, inbound_messages) == 0
    with members(read_only=True) as uow:
        assert uow.cases.get("C-LOST") is None
        assert uow.outbox.pending("CENTRE", 10) == []


def test_explicit_rollback_discards_and_the_next_commit_keeps_only_later_work(
    members: SqlStore,
) -> None:
    with members() as uow:
        uow.cases.add(opened("C-ROLLED", T))
        uow.audit.append(AuditEntry("received", "BANKA", "m-r", "rolled back"), T)
        uow.outbox.add("CENTRE", "report_received", "C-ROLLED", b"r", T)
        uow.rollback()
        uow.audit.append(AuditEntry("admin", "op", "", "kept"), T)
        uow.commit()
    assert count(members, cases) == 0
    assert count(members, deliveries) == 0
    with members.read_engine.connect() as conn:
        assert conn.execute(select(audit_log.c.detail)).scalars().all() == ["kept"]


def test_failed_commit_discards_statements_already_executed(members: SqlStore) -> None:
    case = opened("C-BAD", T)
    case.closed_at = datetime(2026, 3, 2, 10, 0)  # naive: the flush at commit fails
    with members() as uow:
        uow.audit.append(AuditEntry("received", "BANKA", "m-bad", "x", BLOB, "C-BAD"), T)
        uow.outbox.add("CENTRE", "report_received", "C-BAD", BLOB, T)
        uow.inbound.add("BANKA", "m-bad", InboundRecord(b"d" * 32, "t", b"r"), T)
        uow.cases.add(case)
        with pytest.raises(StatementError):
            uow.commit()
    assert count(members, cases) == 0
    assert count(members, audit_log) == 0
    assert count(members, deliveries) == 0
    assert count(members, inbound_messages) == 0


def test_uncommitted_work_is_not_visible_to_other_units_of_work(members: SqlStore) -> None:
    with members() as writer:
        writer.cases.add(opened("C-OPEN", T))
        writer.outbox.add("CENTRE", "report_received", "C-OPEN", b"x", T)
        writer.session.flush()  # type: ignore[attr-defined]
        with members(read_only=True) as reader:
            assert reader.cases.get("C-OPEN") is None
            assert reader.outbox.pending("CENTRE", 10) == []
        writer.commit()
    with members(read_only=True) as reader:
        assert reader.cases.get("C-OPEN") is not None


# ---- audit -----------------------------------------------------------------------------------


def test_audit_rows_keep_payload_bytes_exactly(members: SqlStore) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    entries = [
        AuditEntry("received", "BANKA", "m-1", "all bytes", BLOB, "C1", "C1-O001"),
        AuditEntry("sent", "HUB", "hub-1", "empty", b"", "C1"),
        AuditEntry("transition", "CENTRE", "m-2", "no payload 无", None),
        AuditEntry("sent", "HUB", "hub-2", "big", big),
    ]
    with members() as uow:
        for i, entry in enumerate(entries):
            uow.audit.append(entry, T + timedelta(microseconds=i))
        uow.commit()
    with members.read_engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
    assert [r.id for r in rows] == sorted({r.id for r in rows})
    got = [
        AuditEntry(r.kind, r.actor, r.message_id, r.detail, r.payload, r.case_id, r.order_id)
        for r in rows
    ]
    assert got == entries
    assert [type(r.payload) for r in rows[:2]] == [bytes, bytes]
    assert rows[1].payload == b"" and rows[2].payload is None
    assert [r.recorded_at for r in rows] == [T + timedelta(microseconds=i) for i in range(4)]


# ---- standing rules -------------------------------------------------------------------------


def test_auto_stop_rule_put_replaces_and_enabled_lists(members: SqlStore) -> None:
    with members() as uow:
        uow.rules.put(AutoStopRule("CENTRE", "R1", True, 100, T, "m-1", b"env1"))
        uow.commit()
    with members() as uow:
        uow.rules.put(AutoStopRule("CENTRE", "R2", False, 5, T + timedelta(seconds=1), "m-2", BLOB))
        uow.commit()
    with members(read_only=True) as uow:
        rule = uow.rules.get("CENTRE")
        assert rule is not None
        assert (rule.rule_id, rule.enabled, rule.max_amount_fen, rule.envelope) == (
            "R2",
            False,
            5,
            BLOB,
        )
        assert rule.updated_at == T + timedelta(seconds=1)
        assert uow.rules.enabled() == []
    with members() as uow:
        uow.rules.put(AutoStopRule("CENTRE", "R3", True, 7, T, "m-3", b"e"))
        uow.commit()
    with members(read_only=True) as uow:
        assert [(r.centre_code, r.rule_id) for r in uow.rules.enabled()] == [("CENTRE", "R3")]


def test_involving_finds_open_cases_by_payee_held_account_and_transfer_target(
    members: SqlStore,
) -> None:
    """The link lookup behind one mule, many victims: each way a case's money reaches an
    account, only open cases, never the asking case, and at most `limit` rows."""
    t = T
    target = ("PAYX", "PX-0000000099")
    c1 = opened("C-INV-1", t)
    c2 = opened("C-INV-2", t + timedelta(seconds=1))
    c2.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=t, message_id="m-v2")
    stop = c2.issue(
        "C-INV-2-O001",
        StopCommand(MULE_P, 100, [(t - timedelta(minutes=20), 1_000_000)]),
        issued_by="CENTRE",
        now=t,
        message_id="m-s2",
        institutions=KINDS,
        policy=POLICY,
    )
    c2.answer(
        stop.order_id,
        "PAYX",
        executed(
            100,
            onward=[OnwardTransfer(t - timedelta(minutes=5), 100, *target, "Zhao Liu", "B-1")],
        ),
        now=t,
        message_id="m-a2",
        policy=POLICY,
    )
    rejected = opened("C-INV-3", t + timedelta(seconds=2), payee=MULE_P)
    rejected.verify("BANKA", VerificationOutcome.REJECTED, "not fraud", now=t, message_id="m-v3")
    with members() as uow:
        for case in (c1, c2, rejected):
            uow.cases.add(case)
        uow.commit()
    mule = (MULE_B.institution_code, MULE_B.account_number)
    wallet = (MULE_P.institution_code, MULE_P.account_number)
    with members(read_only=True) as uow:
        assert list(uow.cases.involving({mule}, "C-INV-1", 10)) == [("C-INV-2", *mule)]
        assert list(uow.cases.involving({mule}, "", 10)) == [("C-INV-1", *mule), ("C-INV-2", *mule)]
        # The stopped account (C-INV-2's stop) counts; the rejected case's payment does not.
        assert list(uow.cases.involving({wallet}, "", 10)) == [("C-INV-2", *wallet)]
        assert list(uow.cases.involving({target}, "", 10)) == [("C-INV-2", *target)]
        assert list(uow.cases.involving({mule, target}, "C-INV-2", 10)) == [("C-INV-1", *mule)]
        assert len(uow.cases.involving({mule, wallet, target}, "", 2)) == 2
        assert list(uow.cases.involving(set(), "", 10)) == []


# ---- a new case written with Core statements (hub.store.caserows.py, ADR 25) -------------------


def clock_of(case_id: str, clock_id: str) -> CaseClock:
    return CaseClock(
        clock_id=clock_id,
        case_id=case_id,
        kind="verify",
        responsible="CENTRE",
        started_at=T,
        deadline_at=T + timedelta(minutes=5),
        next_step="breach",
        next_step_at=T + timedelta(minutes=5),
    )


def test_a_new_case_is_the_added_object_in_its_own_transaction(members: SqlStore) -> None:
    case = opened("C-OWN", T)
    with members() as uow:
        uow.cases.add(case)
        assert uow.cases.get("C-OWN", lock=True) is case
        # A query writes it first, and then finds the same object.
        assert [c for c in uow.cases.list(None, 10, None)] == [case]
        assert uow.cases.get("C-OWN") is case
        uow.commit()
    assert count(members, cases) == 1


def test_a_new_case_changed_after_it_was_written_keeps_every_change(members: SqlStore) -> None:
    later = T + timedelta(minutes=1)
    with members() as uow:
        case = opened("C-LATE", T)
        uow.cases.add(case)
        uow.clocks.add(clock_of("C-LATE", "K-LATE"))
        uow.cases.list(None, 10, None)  # written here, before the command is done with it
        case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=later, message_id="m-v")
        case.events[0].operator = "op-7"
        uow.commit()
    with members(read_only=True) as uow:
        loaded = uow.cases.get("C-LATE")
        assert loaded is not None
        assert loaded.state is CaseState.VERIFIED and loaded.verified_at == later
        assert [e.kind for e in loaded.events] == ["report.received", "report.verified"]
        assert loaded.events[0].operator == "op-7"
        assert [c.clock_id for c in uow.clocks.open_for_case("C-LATE")] == ["K-LATE"]


def test_a_rolled_back_savepoint_takes_its_new_case_and_clocks_with_it(
    members: SqlStore,
) -> None:
    with members() as uow:
        before = opened("C-BEFORE", T)
        uow.cases.add(before)
        with pytest.raises(RuntimeError), uow.savepoint():  # type: ignore[attr-defined]
            uow.cases.add(opened("C-INSIDE", T))
            uow.clocks.add(clock_of("C-INSIDE", "K-INSIDE"))
            uow.clocks.add(clock_of("C-BEFORE", "K-BEFORE"))
            uow.cases.list(None, 10, None)  # both cases and both clocks written inside
            raise RuntimeError("the command failed")
        # The case queued before the savepoint is queued again, its rows having gone with it.
        assert uow.cases.get("C-BEFORE") is before
        assert uow.cases.get("C-INSIDE") is None
        uow.commit()
    with members(read_only=True) as uow:
        assert [c.case_id for c in uow.cases.list(None, 10, None)] == ["C-BEFORE"]
        assert uow.clocks.open_for_case("C-INSIDE") == []
        assert uow.clocks.open_for_case("C-BEFORE") == []


def test_a_clock_of_a_new_case_goes_in_after_its_case(members: SqlStore) -> None:
    with members() as uow:
        uow.clocks.add(clock_of("C-FK", "K-FK"))  # queued before its case: written after it
        uow.cases.add(opened("C-FK", T))
        uow.commit()
    with members(read_only=True) as uow:
        assert [c.clock_id for c in uow.clocks.open_for_case("C-FK")] == ["K-FK"]


def test_a_case_whose_part_the_session_holds_comes_from_the_session(members: SqlStore) -> None:
    with members() as uow:
        case = opened("C-PART", T)
        case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=T, message_id="m-v")
        case.issue(
            "C-PART-O001",
            StopCommand(MULE_B, 1_000_000, [(case.transactions[0].transaction_time, 1_000_000)]),
            issued_by="CENTRE",
            now=T,
            message_id="m-s",
            institutions=KINDS,
            policy=POLICY,
        )
        uow.cases.add(case)
        uow.commit()
    with members() as uow:
        order = uow.session.get(Order, "C-PART-O001")  # type: ignore[attr-defined]
        assert order is not None
        order.note = "changed before the case was read"
        loaded = uow.cases.get("C-PART", lock=True)
        assert loaded is not None and loaded.orders[0] is order
        assert uow.cases.get("C-PART") is loaded  # and the case, once held, is the same
        uow.commit()
    with members(read_only=True) as uow:
        again = uow.cases.get("C-PART")
        assert again is not None and again.orders[0].note == "changed before the case was read"
        assert [f.amount_fen for f in again.orders[0].facts] == [1_000_000]
