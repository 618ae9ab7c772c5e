"""`stophub datakeys`: make, rotate and re-seal under data keys; `serve` refuses without them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import main, serve
from hub.crypto import fields
from hub.crypto.keys import PrivateKey, save_private_key
from hub.observability.logmask import AccountMask


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def status_totals(out: str) -> dict[str, int]:
    return {
        line.split()[1]: int(line.split()[2])
        for line in out.splitlines()
        if line.startswith("total")
    }


@pytest.fixture
def no_data_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fields.configure(None)
    monkeypatch.delenv(fields.ENV_KEYS)
    monkeypatch.chdir(tmp_path)  # no var/data-keys.json


@pytest.mark.usefixtures("no_data_keys")
def test_serve_without_data_keys_says_how_to_make_them(tmp_path: Path) -> None:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    db = tmp_path / "never.db"
    args = ["serve", "--db", f"sqlite:///{db}", "--hub-key", str(tmp_path / "hub.key")]
    result = CliRunner().invoke(main, [*args, "--insecure-plaintext"])
    assert result.exit_code == 1, result.output
    assert "no data keys at var/data-keys.json" in result.output
    assert "stophub datakeys generate" in result.output
    assert not db.exists(), "a refused start touches no database"
    reader = CliRunner().invoke(main, ["case", "list", "--db", f"sqlite:///{db}"])
    assert reader.exit_code == 1 and "no database at" in reader.output, reader.output
    assert not db.exists(), "a read touches no database either"


@pytest.mark.usefixtures("no_data_keys")
def test_generate_rotate_reencrypt_status(tmp_path: Path) -> None:
    keys = tmp_path / "dk.json"
    db = f"sqlite:///{tmp_path}/hub.db"
    first = run("datakeys", "generate", "--file", str(keys)).split()[2]
    assert keys.stat().st_mode & 0o777 == 0o600
    assert fields.load_keyring_file(keys).current == first
    # Sealed under the first key: 3 fields of 4 duty contacts, 2 audit details.
    for code in ("BANKA", "BANKB"):
        run(
            "--data-keys",
            str(keys),
            "institution",
            "add",
            "--code",
            code,
            "--name",
            code,
            "--kind",
            "bank",
            "--primary",
            "Wang Li,+86-10-5550-0001",
            "--backup",
            "Zhao Min,+86-10-5550-0002",
            "--db",
            db,
        )
    assert status_totals(run("datakeys", "status", "--file", str(keys), "--db", db)) == {first: 14}

    out = run("datakeys", "generate", "--file", str(keys))
    second = out.split()[2]
    assert f"not current ({first} is)" in out
    assert "current data key: " + second in run("datakeys", "rotate", "--file", str(keys))
    out = run("datakeys", "reencrypt", "--file", str(keys), "--db", db, "--batch", "1")
    assert f"14 value(s) re-sealed under {second}" in out
    assert "duty_contacts" in out
    out = run("datakeys", "status", "--file", str(keys), "--db", db)
    assert status_totals(out) == {second: 14} and "(current)" in out
    # Re-sealing moves no tag: the audit entries' tags still need the first key.
    [tags] = [line.split() for line in out.splitlines() if line.startswith("audit tags")]
    assert tags[3] == first and int(tags[4]) >= 2 and "NOT IN THE KEYRING" not in out
    assert "0 value(s) re-sealed" in run("datakeys", "reencrypt", "--file", str(keys), "--db", db)
    shown = run("--data-keys", str(keys), "institution", "show", "BANKB", "--db", db)
    assert "Zhao Min" in shown and "+86-10-5550-0002" in shown


def test_sighup_reload_makes_a_rotated_key_current(tmp_path: Path) -> None:
    keys = tmp_path / "dk.json"
    fields.Keyring.generate("dk-a").save(keys)
    fields.configure(fields.load_keyring_file(keys))
    run("datakeys", "generate", "--file", str(keys), "--make-current")
    assert fields.keyring().current == "dk-a"
    serve._reload_data_keys()
    assert fields.keyring().current != "dk-a" and "dk-a" in fields.keyring().keys
    keys.chmod(0o644)  # a broken file keeps the keys in use
    current = fields.keyring().current
    serve._reload_data_keys()
    assert fields.keyring().current == current


def test_the_cli_masks_accounts_in_every_log_handler(caplog: pytest.LogCaptureFixture) -> None:
    run("--log-level", "INFO", "datakeys", "--help")
    assert any(isinstance(f, AccountMask) for f in caplog.handler.filters)
    logging.getLogger("hub.anything").warning("stop on %s failed", "6222020000001234")
    assert "6222********1234" in caplog.text and "6222020000001234" not in caplog.text


@pytest.mark.usefixtures("no_data_keys")
def test_reencrypt_from_aes_to_sm4_and_back(tmp_path: Path) -> None:
    keys = tmp_path / "dk.json"
    db = f"sqlite:///{tmp_path}/hub.db"
    first = run("datakeys", "generate", "--file", str(keys)).split()[2]
    run(
        *("--data-keys", str(keys), "institution", "add", "--code", "BANKA", "--name", "A"),
        *("--kind", "bank", "--primary", "Wang Li,+86-10-5550-0001"),
        *("--backup", "Zhao Min,+86-10-5550-0002", "--db", db),
    )
    out = run("datakeys", "generate", "--file", str(keys), "--cipher", "sm4-gcm", "--make-current")
    sm4 = out.split()[2]
    assert "(sm4-gcm)" in out and ": current" in out
    assert fields.load_keyring_file(keys).cipher == "sm4-gcm"
    out = run("datakeys", "reencrypt", "--file", str(keys), "--db", db)
    assert f"re-sealed under {sm4} (sm4-gcm)" in out
    out = run("datakeys", "status", "--file", str(keys), "--db", db)
    assert set(status_totals(out)) == {sm4}
    assert f"keyring: {first} (aes-256-gcm), {sm4} (sm4-gcm); current {sm4}" in out
    assert "Wang Li" in run("--data-keys", str(keys), "institution", "show", "BANKA", "--db", db)

    back = run("datakeys", "generate", "--file", str(keys), "--make-current").split()[2]
    assert "(aes-256-gcm)" in run("datakeys", "reencrypt", "--file", str(keys), "--db", db)
    assert set(status_totals(run("datakeys", "status", "--file", str(keys), "--db", db))) == {back}
    assert "Wang Li" in run("--data-keys", str(keys), "institution", "show", "BANKA", "--db", db)
    refused = CliRunner().invoke(
        main, ["datakeys", "generate", "--file", str(keys), "--cipher", "des"]
    )
    assert refused.exit_code == 2 and "'des' is not one of" in refused.output
