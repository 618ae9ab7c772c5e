"""Raw-wire helpers for e2e tests that must craft exactly the bytes they send."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from google.protobuf.message import Message

from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from stophub.v1 import account_pb2, case_pb2, envelope_pb2

MULE = account_pb2.AccountRef(
    institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
)
VICTIM = account_pb2.AccountRef(
    institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
)


def sign(
    key: PrivateKey,
    sender: str,
    body: Message,
    now: datetime,
    *,
    message_id: str | None = None,
    recipient: str = "HUB",
) -> envelope_pb2.Envelope:
    return seal_message(
        key,
        sender=sender,
        recipient=recipient,
        message_id=message_id or f"t-{uuid.uuid4().hex}",
        create_time=now,
        message=body,
    )


def report(now: datetime, amounts: tuple[int, ...] = (3_000_000, 2_000_000)) -> case_pb2.Report:
    pb = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234", phone="13800000000"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="caller posing as police asked for a 'safe account' transfer",
    )
    pb.victim_report_time.FromDatetime(now)
    for i, amount in enumerate(amounts):
        t = pb.transactions.add(
            amount_fen=amount,
            payer=VICTIM,
            payee=MULE,
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference=f"A-TX-{i + 1}",
        )
        t.transaction_time.FromDatetime(now - timedelta(minutes=20 - i))
    return pb
