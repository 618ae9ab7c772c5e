"""A client trusts the hub's keys it is given: during a hub key rotation, both."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.sdk.client import HubClient, HubSignatureError
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from hub.crypto.signing import ECDSA_P256
from stophub.v1 import case_pb2, envelope_pb2

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def from_hub(key: PrivateKey) -> envelope_pb2.Envelope:
    return seal_message(
        key,
        sender="HUB",
        recipient="BANKA",
        message_id=f"hub-{key.key_id}",
        create_time=NOW,
        message=case_pb2.Case(case_id="C1"),
    )


async def test_both_hub_keys_verify_during_a_rotation_and_no_other() -> None:
    old, new, stranger = (
        PrivateKey.generate(),
        PrivateKey.generate(ECDSA_P256),
        PrivateKey.generate(),
    )
    client = HubClient(
        "127.0.0.1:1",
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=[new.public_key, old.public_key],
    )
    try:
        for key in (old, new):
            assert client.open_hub_envelope(from_hub(key), case_pb2.Case).case_id == "C1"
        with pytest.raises(HubSignatureError, match="trusts are"):
            client.open_hub_envelope(from_hub(stranger), case_pb2.Case)
        forged = from_hub(stranger)
        forged.key_id = old.key_id  # claims the trusted key, signed by another
        with pytest.raises(HubSignatureError, match="does not verify"):
            client.open_hub_envelope(forged, case_pb2.Case)
    finally:
        await client.close()


async def test_a_single_pinned_key_trusts_only_itself() -> None:
    pinned, other = PrivateKey.generate(), PrivateKey.generate()
    client = HubClient(
        "127.0.0.1:1",
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=pinned.public_key,
    )
    try:
        client.open_hub_envelope(from_hub(pinned), case_pb2.Case)
        with pytest.raises(HubSignatureError):
            client.open_hub_envelope(from_hub(other), case_pb2.Case)
    finally:
        await client.close()
