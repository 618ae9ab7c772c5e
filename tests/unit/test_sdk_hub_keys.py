"""A client trusts the hub's keys it is given: during a hub key rotation, both; given as the
operator publishes them (the PEM `.pub` of `stophub keys generate`) or as raw keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.sdk.client import HubClient, HubKey, HubSignatureError, read_hub_key
from hub.cli import main
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey, load_private_key
from hub.crypto.signing import ECDSA_P256, ED25519
from stophub.v1 import case_pb2, envelope_pb2
from tests.unit.test_cli_hub_key import P384_PEM

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


# ---- the hub's key as `stophub keys generate` writes it (issue 19 item 17) ----------------------


def generated(tmp_path: Path, algorithm: str) -> tuple[PrivateKey, Path]:
    """The hub's key pair as the operator makes it: `stophub keys generate`."""
    out = tmp_path / algorithm / "hub.key"
    out.parent.mkdir()
    made = CliRunner().invoke(
        main, ["keys", "generate", "--out", str(out), "--algorithm", algorithm]
    )
    assert made.exit_code == 0, made.output
    return load_private_key(out), out.with_suffix(".pub")


def given_as(pub: Path) -> dict[str, HubKey]:
    return {
        "a Path": pub,
        "a str path": str(pub),
        "the file's bytes": pub.read_bytes(),
        "the file's text": pub.read_text(),
    }


@pytest.mark.parametrize("algorithm", [ED25519, ECDSA_P256])
async def test_the_pub_file_keys_generate_writes_is_pinned_in_every_form(
    tmp_path: Path, algorithm: str
) -> None:
    hub, pub = generated(tmp_path, algorithm)
    for how, value in given_as(pub).items():
        client = HubClient(
            "127.0.0.1:1", institution="BANKA", key=PrivateKey.generate(), hub_public_key=value
        )
        try:
            assert (client.hub_key_id, client.hub_algorithm) == (hub.key_id, algorithm), how
            assert client.open_hub_envelope(from_hub(hub), case_pb2.Case).case_id == "C1", how
        finally:
            await client.close()


async def test_a_rotation_pins_the_old_and_the_new_pub_file(tmp_path: Path) -> None:
    old, old_pub = generated(tmp_path, ED25519)
    new, new_pub = generated(tmp_path, ECDSA_P256)
    client = HubClient(
        "127.0.0.1:1",
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=[new_pub, str(old_pub)],
    )
    try:
        assert client.hub_key_id == new.key_id  # the first given is the current one
        for key in (old, new):
            assert client.open_hub_envelope(from_hub(key), case_pb2.Case).case_id == "C1"
    finally:
        await client.close()


async def test_a_raw_ed25519_key_file_is_pinned(tmp_path: Path) -> None:
    hub = PrivateKey.generate()
    raw = tmp_path / "hub.raw"
    raw.write_bytes(hub.public_key)
    client = HubClient(
        "127.0.0.1:1", institution="BANKA", key=PrivateKey.generate(), hub_public_key=raw
    )
    try:
        assert client.open_hub_envelope(from_hub(hub), case_pb2.Case).case_id == "C1"
    finally:
        await client.close()


NOT_A_HUB_KEY = {
    "empty": b"",
    "31 raw bytes": PrivateKey.generate().public_key[:31],
    "text": b"the hub's key is in the other file\n",
    "a garbled PEM": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    "a P-384 key": P384_PEM,
    "the hub's private key": PrivateKey.generate().to_pem(),
}


@pytest.mark.parametrize("what", sorted(NOT_A_HUB_KEY))
def test_anything_else_is_refused_before_connecting_saying_what_is_accepted(
    tmp_path: Path, what: str
) -> None:
    bad = tmp_path / "hub.pub"
    bad.write_bytes(NOT_A_HUB_KEY[what])
    for value in (bad, NOT_A_HUB_KEY[what]):
        with pytest.raises(ValueError, match=r"^hub_public_key") as refused:
            read_hub_key(value)
        message = str(refused.value)
        assert "\n" not in message, message
        if isinstance(value, Path):
            assert str(bad) in message
    with pytest.raises(ValueError, match="cannot read the hub's public key"):
        read_hub_key(tmp_path / "missing.pub")


def test_a_raw_p256_point_is_a_key_in_memory_not_a_key_file(tmp_path: Path) -> None:
    """The raw point is what `PrivateKey.public_key` and the registry hold; key files are PEM
    (docs/signing.md, "Key files"), as `stophub replica --hub-key` reads them."""
    p256 = PrivateKey.generate(ECDSA_P256)
    assert read_hub_key(p256.public_key) == (ECDSA_P256, p256.public_key)
    point = tmp_path / "hub.point"
    point.write_bytes(p256.public_key)
    with pytest.raises(ValueError, match="neither a PEM public key"):
        read_hub_key(point)
