"""adapters/sdk/identity.py: an institution's identity directory, laid out and read back, and
each missing or broken file named in one line with the command that makes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.sdk.identity import IdentityError, load_identity, write_identity
from hub.crypto import pki
from hub.crypto.keys import PrivateKey


def _identity(tmp_path: Path, hub: str | None = "127.0.0.1:7443") -> Path:
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    issued = pki.issue_client(ca, "BANKA", now)
    tls = pki.TlsConfig(ca.cert_pem, issued.cert_pem, issued.key_pem)
    folder = tmp_path / "banka"
    write_identity(folder, "banka", PrivateKey.generate(), tls, PrivateKey.generate(), hub)
    return folder


# Async: a client's gRPC channel belongs to a running event loop. Made outside one, it took
# the thread's default loop, which an earlier asyncio.run in the same worker had unset.
async def test_written_identity_loads_back(tmp_path: Path) -> None:
    folder = _identity(tmp_path)
    identity = load_identity(folder)
    assert identity.institution == "BANKA"
    assert identity.hub == "127.0.0.1:7443"
    assert len(identity.hub_keys) == 1
    assert (folder / "banka-tls.key").stat().st_mode & 0o077 == 0
    client = identity.client()
    assert client.institution == "BANKA" and client.target == "127.0.0.1:7443"
    await client.close()
    # --hub and --as override the file.
    other = load_identity(folder, hub="10.0.0.1:1")
    assert other.hub == "10.0.0.1:1"


def test_second_hub_key_is_trusted_after_the_current_one(tmp_path: Path) -> None:
    folder = _identity(tmp_path)
    (folder / "hub-next.pub").write_bytes((folder / "hub.pub").read_bytes())
    identity = load_identity(folder)
    assert len(identity.hub_keys) == 2


@pytest.mark.parametrize(
    ("remove", "says"),
    [
        ("signing.key", "stophub keys generate"),
        ("ca.pem", "stophub pki issue BANKA"),
        ("banka-tls.pem", "stophub pki issue BANKA"),
        ("hub.pub", "hub.pub the hub's operator published"),
    ],
)
def test_missing_file_is_named_with_what_to_do(tmp_path: Path, remove: str, says: str) -> None:
    folder = _identity(tmp_path)
    (folder / remove).unlink()
    with pytest.raises(IdentityError, match=says) as caught:
        load_identity(folder)
    assert "\n" not in str(caught.value)


def test_no_institution_and_no_hub_are_said(tmp_path: Path) -> None:
    folder = _identity(tmp_path, hub=None)
    with pytest.raises(IdentityError, match="names no hub"):
        load_identity(folder).client()
    (folder / "identity.toml").unlink()
    with pytest.raises(IdentityError, match="--as CODE"):
        load_identity(folder)
    assert load_identity(folder, institution="BANKA").institution == "BANKA"


def test_broken_files_are_findings_not_tracebacks(tmp_path: Path) -> None:
    folder = _identity(tmp_path)
    (folder / "hub.pub").write_text("not a key")
    with pytest.raises(IdentityError, match="not a hub public key"):
        load_identity(folder)
    (folder / "identity.toml").write_text("institution = ")
    with pytest.raises(IdentityError, match="cannot read it"):
        load_identity(folder)
    with pytest.raises(IdentityError, match="no such identity directory"):
        load_identity(tmp_path / "nowhere")


async def test_the_hub_may_be_its_replicas(tmp_path: Path) -> None:
    """identity.toml's hub: several replicas as one string or a TOML list (docs/failover.md);
    a bad one is named in one line."""
    folder = _identity(tmp_path)
    toml = folder / "identity.toml"
    for hub in ('"127.0.0.1:7443, 127.0.0.1:7444"', '["127.0.0.1:7443", "127.0.0.1:7444"]'):
        toml.write_text(f'institution = "BANKA"\nhub = {hub}\n', encoding="utf-8")
        identity = load_identity(folder)
        assert identity.hub == "127.0.0.1:7443,127.0.0.1:7444"
        client = identity.client()
        assert client.targets == ["127.0.0.1:7443", "127.0.0.1:7444"]
        await client.close()
    toml.write_text('institution = "BANKA"\nhub = "127.0.0.1"\n', encoding="utf-8")
    with pytest.raises(IdentityError, match=r"identity.toml: hub: hub address .* not HOST:PORT"):
        load_identity(folder)
