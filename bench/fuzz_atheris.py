"""Coverage-guided fuzzing of the hub's decode and validate path, in-process, with atheris.
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.service.commands.delivery import ACK
from hub.service.commands.order import ANSWER_ORDER, ISSUE_ORDER, SET_AUTO_STOP_RULE
from hub.service.pipeline import Command, Hub

Not part of `make test` and not a dependency: atheris is installed only to run this.

    .venv/bin/pip install atheris          # a manylinux wheel for CPython 3.11 on x86_64
    .venv/bin/python bench/fuzz_atheris.py -max_total_time=300 var/fuzz-corpus
    .venv/bin/pip uninstall -y atheris

Arguments after the script are libFuzzer's (-runs=N, -max_total_time=S, -jobs=N, a corpus
directory to keep and grow between runs). Each input's first byte picks the command and the
rest is its body; the body goes through exactly what a
signed request meets after its signature checked: `Command.decode` (body type, protobuf parse,
NUL refusal), the command's `wire.*_from_proto` and the domain validation that needs no
database. The envelope path gets the same input as a serialized request: the tolerant
request parse, `check_text`, `create_time_of` and the signing-input digest. A DomainError
is a clean refusal; any other exception is a crash that libFuzzer reports with its input
saved as crash-<sha1> (re-run the script with that file as the argument to reproduce).
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from google.protobuf.message import Message

    from hub.api.decoding import Undecodable, tolerant
    from hub.crypto.envelope import create_time_of, digest_of
    from hub.domain.cases import validate_account, validate_report
    from hub.domain.errors import DomainError
    from hub.domain.institutions import InstitutionKind
    from hub.domain.leads import Lead
    from hub.domain.rules import AutoStopRule
    from hub.domain.warnings import Grade, Warning
    from hub.service import wire
    from hub.service.commands import case, delivery, institution, lead, order, returns, sla, warning
    from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
    from hub.service.commands.delivery import ACK
    from hub.service.commands.lead import SUBMIT_LEAD, evidence_of, transfers_of
    from hub.service.commands.order import ANSWER_ORDER, ISSUE_ORDER, SET_AUTO_STOP_RULE
    from hub.service.commands.warning import (
        REPORT_WARNING_OUTCOME,
        SEND_WARNING,
        SET_WARNING_GRADE,
    )
    from hub.service.pipeline import Command
    from hub.service.warnings import OUTCOMES_BY_NUMBER, facts_from_proto, grade_of
    from stophub.v1 import (
        account_pb2,
        case_pb2,
        delivery_pb2,
        envelope_pb2,
        lead_pb2,
        order_pb2,
        warning_pb2,
    )

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MEMBERS = {
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "PAYX": InstitutionKind.PAYMENT_INSTITUTION,
    "CENTRE": InstitutionKind.ANTI_FRAUD_CENTRE,
}
# Every command the hub serves, SUBSCRIBE and ACK of the stream included, in a fixed order.
COMMANDS: list[Command[Any]] = sorted(
    (
        c
        for module in (case, order, institution, sla, returns, delivery, lead)
        for module in (case, order, institution, sla, returns, delivery, warning)
        for c in vars(module).values()
        if isinstance(c, Command)
    ),
    key=lambda c: c.body_type,
)
parse_request = tolerant(case_pb2.CreateReportRequest.FromString)


def validate(command: Command[Any], body: Message) -> None:
    """The command's own decoding plus the rules that need no database."""
    if command is CREATE_REPORT:
        assert isinstance(body, case_pb2.Report)
        validate_report(wire.report_from_proto(body), "BANKA", NOW, MEMBERS)
    elif command is VERIFY_REPORT:
        wire.verification_from_proto(body)  # type: ignore[arg-type]
    elif command is ISSUE_ORDER:
        wire.order_command_from_proto(body)  # type: ignore[arg-type]
    elif command is ANSWER_ORDER:
        wire.execution_from_proto(body)  # type: ignore[arg-type]
    elif command is SET_AUTO_STOP_RULE:
        AutoStopRule.validated(
            "CENTRE",
            body.rule_id.strip(),  # type: ignore[attr-defined]
            body.enabled,  # type: ignore[attr-defined]
            body.max_amount_fen,  # type: ignore[attr-defined]
            now=NOW,
            message_id="m",
            envelope=b"",
        )
    elif command is ACK:
        wire.ack_sequences(body)  # type: ignore[arg-type]
    elif command is SUBMIT_LEAD:
        assert isinstance(body, lead_pb2.SubmitLeadBody)
        Lead.submit(
            "L20260302-00000000",
            "BANKA",
            grade=wire.grade_from_proto(body.grade, "grade"),
            grounds=body.grounds,
            accounts=[wire.account_from_proto(a) for a in body.accounts],
            transfers=transfers_of(body),
            evidence=evidence_of(body.evidence, "evidence"),
            now=NOW,
            message_id="m",
            institutions=MEMBERS,
        )
    elif isinstance(body, case_pb2.SetCaseGradeBody | lead_pb2.SetLeadGradeBody):
        wire.grade_from_proto(body.grade, "grade", required=True)
    elif command is SEND_WARNING:
        facts = facts_from_proto(body)  # type: ignore[arg-type]
        validate_account("account", facts.account, MEMBERS, need_holder=False)
        Warning.send(
            "W1",
            "CENTRE",
            facts.account.institution_code,
            account=("BANKB", "6222020000000002", ""),
            fraud_type=facts.fraud_type,
            counterparty=("", "", ""),
            amount_at_risk_fen=facts.amount_at_risk_fen,
            grade=facts.grade,
            text=facts.text,
            now=NOW,
            message_id="m",
        )
    elif command is REPORT_WARNING_OUTCOME:
        closing: Any = body
        sample = Warning.send(
            "W1",
            "CENTRE",
            "BANKA",
            account=("BANKA", "6222010000000001", ""),
            fraud_type="",
            counterparty=("", "", ""),
            amount_at_risk_fen=3_000_000,
            grade=Grade.RED,
            text="",
            now=NOW,
            message_id="m",
        )
        outcome = OUTCOMES_BY_NUMBER.get(closing.outcome)
        if outcome is not None:
            sample.report_outcome(outcome, closing.loss_prevented_fen, closing.text, NOW, "m")
        if closing.HasField("report"):
            validate_report(wire.report_from_proto(closing.report), "BANKA", NOW, MEMBERS)
    elif command is SET_WARNING_GRADE:
        grade_of(body.grade)  # type: ignore[attr-defined]


def envelope_path(data: bytes) -> None:
    request = parse_request(data)
    if isinstance(request, Undecodable):
        return
    env: envelope_pb2.Envelope = request.envelope
    wire.check_text(env)
    create_time_of(env)
    # Documented: nanos outside 0..999999999 have no signing input (a BAD_SIGNATURE refusal).
    with contextlib.suppress(ValueError):
        digest_of(env)


def one_input(data: bytes) -> None:
    if not data:
        return
    command = COMMANDS[data[0] % len(COMMANDS)]
    env = envelope_pb2.Envelope(body_type=command.body_type, body=data[1:])
    with contextlib.suppress(DomainError):
        validate(command, command.decode(env))
    with contextlib.suppress(DomainError):
        envelope_path(data)


def seed(corpus: Path) -> None:
    """Start an empty corpus from valid bodies: random bytes rarely parse as protobuf, and
    libFuzzer's mutations of a valid body reach the rules far sooner."""
    mule = account_pb2.AccountRef(
        institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
    )
    victim = account_pb2.AccountRef(institution_code="BANKA", account_number="6222010000000001")
    report = case_pb2.Report(victim=case_pb2.Victim(name="Zhang San"), fraud_type=1)
    tx = report.transactions.add(amount_fen=3_000_000, payer=victim, payee=mule, channel=1)
    tx.transaction_time.FromDatetime(NOW)
    bodies = {
        CREATE_REPORT: report,
        VERIFY_REPORT: case_pb2.Verification(case_id="C1", outcome=1, reason="r"),
        ISSUE_ORDER: order_pb2.OrderInstruction(
            case_id="C1",
            stop=order_pb2.StopInstruction(
                account=mule, amount_fen=5, transactions=[order_pb2.TransactionFact(amount_fen=5)]
            ),
        ),
        ANSWER_ORDER: order_pb2.ExecutionResult(order_id="O1", status=1, amount_held_fen=5),
        SET_AUTO_STOP_RULE: order_pb2.AutoStopRule(rule_id="r", enabled=True, max_amount_fen=9),
        ACK: delivery_pb2.AckBody(sequences=[1, 2, 3]),
        SUBMIT_LEAD: lead_pb2.SubmitLeadBody(accounts=[mule], grade=3, grounds="fast in, out"),
        SEND_WARNING: warning_pb2.SendWarningBody(
            account=mule, amount_at_risk_fen=3_000_000, grade=3, fraud_type=2, text="t"
        ),
        REPORT_WARNING_OUTCOME: warning_pb2.ReportWarningOutcomeBody(
            warning_id="W1", outcome=4, loss_prevented_fen=5, report=report
        ),
        SET_WARNING_GRADE: warning_pb2.SetWarningGradeBody(name="warnings/W1", grade=1, reason="r"),
    }
    for command, body in bodies.items():
        choice = bytes([COMMANDS.index(command)])
        (corpus / f"seed-{command.body_type}").write_bytes(choice + body.SerializeToString())


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    if dirs and not any(dirs[0].iterdir()):
        seed(dirs[0])
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
