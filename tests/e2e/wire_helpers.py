"""Raw-wire helpers for e2e tests that must craft exactly the bytes they send."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from stophub.v1 import account_pb2, case_pb2, envelope_pb2, order_pb2

if TYPE_CHECKING:
    from tests.e2e.conftest import Network

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
        victim=case_pb2.Victim(
            name="Zhang San", id_number="110101199001011234", phone="13800000000"
        ),
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


class RawStream:
    """A delivery stream driven by hand, to test the stream's rules byte by byte."""

    def __init__(self, network: Network, code: str, *, key: PrivateKey | None = None) -> None:
        from stophub.v1 import delivery_pb2_grpc

        self.key, self.code, self.clock = key or network.keys[code], code, network.clock
        self.channel = network.channel(code)
        self.call = delivery_pb2_grpc.DeliveryServiceStub(self.channel).StreamDeliveries()
        # One reader for the call's life: cancelling a pending read would cancel the RPC.
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.checkpoints: list[delivery_pb2.StreamDeliveriesResponse] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        import grpc

        try:
            while True:
                item = await self.call.read()
                if item is grpc.aio.EOF:  # type: ignore[attr-defined]
                    self.inbox.put_nowait(EOFError("stream ended"))
                    return
                self.inbox.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.inbox.put_nowait(exc)

    async def open(self, name: str = "primary") -> RawStream:
        from stophub.v1 import delivery_pb2

        hello = delivery_pb2.SubscribeBody(connection_name=name)
        await self.call.write(
            delivery_pb2.StreamDeliveriesRequest(
                envelope=sign(self.key, self.code, hello, self.clock.now())
            )
        )
        return self

    async def next(
        self, timeout: float = 5.0, *, checkpoints: bool = False
    ) -> delivery_pb2.StreamDeliveriesResponse:
        """The next delivery; messages that carry only the log checkpoint (sequence 0, no
        envelope: docs/witness.md) are set aside in `self.checkpoints`, unless `checkpoints`
        asks for every message."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            item = await asyncio.wait_for(self.inbox.get(), max(deadline - loop.time(), 0))
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, delivery_pb2.StreamDeliveriesResponse)
            if checkpoints or item.sequence != 0 or item.HasField("envelope"):
                return item
            self.checkpoints.append(item)

    def holds_delivery(self) -> bool:
        """Whether a delivery is waiting, not counting messages that carry only the log
        checkpoint (set aside in `self.checkpoints` as `next` does)."""
        from stophub.v1 import delivery_pb2

        kept: list[object] = []
        found = False
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if (
                isinstance(item, delivery_pb2.StreamDeliveriesResponse)
                and item.sequence == 0
                and not item.HasField("envelope")
            ):
                self.checkpoints.append(item)
                continue
            found = True
            kept.append(item)
        for item in kept:
            self.inbox.put_nowait(item)
        return found

    async def ack(
        self, *sequences: int, key: PrivateKey | None = None, sender: str | None = None
    ) -> None:
        from stophub.v1 import delivery_pb2

        body = delivery_pb2.AckBody(sequences=list(sequences))
        await self.call.write(
            delivery_pb2.StreamDeliveriesRequest(
                envelope=sign(key or self.key, sender or self.code, body, self.clock.now())
            )
        )

    async def close(self) -> None:
        self.reader.cancel()
        self.call.cancel()
        await self.channel.close()


from stophub.v1 import delivery_pb2  # noqa: E402


def freeze_of(
    case_id: str,
    account: account_pb2.AccountRef,
    amount_fen: int,
    *,
    takes_over: str = "",
    filed_case_number: str = "JX-2026-0312",
) -> order_pb2.OrderInstruction:
    """The centre's freeze of `account` for 6 months under a filed case, taking over the stop
    `takes_over` if given."""
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.freeze.CopyFrom(
        order_pb2.FreezeInstruction(
            account=account,
            amount_fen=amount_fen,
            filed_case_number=filed_case_number,
            approving_authority="PSB Xicheng",
            term_months=6,
            stop_order_id=takes_over,
        )
    )
    return instruction
