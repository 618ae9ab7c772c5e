"""`--hub-key`, the hub's public key, read one way by every command that takes it (`replica`,
`audit verify`, `audit verify-export`, `audit checkpoint`): a PEM public key or a raw 32-byte
Ed25519 key; anything else is refused with one line naming the file, never a traceback (exit
1, or 2 for the audit checks, which exit 2 whenever the check cannot be made)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.cli import main
from hub.cli.common import read_hub_public_key
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.public import public_key_to_pem
from hub.crypto.signing import ECDSA_P256

HUB = PrivateKey.generate()
P384_PEM = (
    ec.generate_private_key(ec.SECP384R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
MALFORMED = {
    "empty": b"",
    "31 raw bytes": HUB.public_key[:31],
    "33 raw bytes": HUB.public_key + b"\n",
    "a raw P-256 point": PrivateKey.generate(ECDSA_P256).public_key,
    "text": b"the hub's key is in the other file\n",
    "a garbled PEM": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    "a P-384 key": P384_PEM,
}


def test_a_pem_and_a_raw_ed25519_key_are_the_same_key(tmp_path: Path) -> None:
    pem, raw = tmp_path / "hub.pub", tmp_path / "hub.raw"
    pem.write_bytes(public_key_to_pem(HUB.algorithm, HUB.public_key))
    raw.write_bytes(HUB.public_key)
    assert read_hub_public_key(str(pem)) == (HUB.key_id, HUB.public_key)
    assert read_hub_public_key(str(raw)) == (HUB.key_id, HUB.public_key)
    p256 = PrivateKey.generate(ECDSA_P256)
    pem.write_bytes(public_key_to_pem(p256.algorithm, p256.public_key))
    assert read_hub_public_key(str(pem)) == (p256.key_id, p256.public_key)


def commands(tmp_path: Path, hub_key: Path) -> dict[str, list[str]]:
    member = tmp_path / "payx.key"
    if not member.exists():
        save_private_key(PrivateKey.generate(), member)
    export = tmp_path / "audit.jsonl"
    export.write_text("", encoding="utf-8")
    return {
        "replica": [
            "replica",
            "--hub",
            "127.0.0.1:9",
            "--institution",
            "PAYX",
            "--key",
            str(member),
            "--hub-key",
            str(hub_key),
            "--insecure-plaintext",
            "--db",
            str(tmp_path / "copy.db"),
            "--once",
        ],
        "audit verify-export": [
            "audit",
            "verify-export",
            "--export",
            str(export),
            "--hub-key",
            str(hub_key),
        ],
        "audit verify": [
            "audit",
            "verify",
            "--db",
            f"sqlite:///{tmp_path / 'copy.db'}",
            "--hub-key",
            str(hub_key),
        ],
        "audit checkpoint": [
            "audit",
            "checkpoint",
            "--db",
            f"sqlite:///{tmp_path / 'copy.db'}",
            "--hub-key",
            str(hub_key),
            "--out",
            str(tmp_path / "kept.json"),
        ],
    }


# A check that cannot be made (here: its key unreadable) exits 2 (docs/audit.md).
EXIT = {"replica": 1, "audit verify-export": 2, "audit verify": 2, "audit checkpoint": 2}


@pytest.mark.parametrize("what", sorted(MALFORMED))
@pytest.mark.parametrize("command", sorted(EXIT))
def test_a_malformed_hub_key_is_one_line(tmp_path: Path, command: str, what: str) -> None:
    bad = tmp_path / "hub.pub"
    bad.write_bytes(MALFORMED[what])
    result = CliRunner().invoke(main, commands(tmp_path, bad)[command])
    assert result.exit_code == EXIT[command], result.output
    assert isinstance(result.exception, SystemExit)  # a refusal, not an exception
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: "), result.output
    assert not (tmp_path / "copy.db").exists()  # refused before anything was done


def test_a_private_key_given_as_the_hub_key_is_refused_in_one_line(tmp_path: Path) -> None:
    private = tmp_path / "hub.key"
    save_private_key(HUB, private)
    for command, args in commands(tmp_path, private).items():
        result = CliRunner().invoke(main, args)
        assert result.exit_code == EXIT[command], (command, result.output)
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {private}: "), result.output
        assert "not a PEM public key" in lines[0], command
