"""Secret files: owner-only on disk, never overwritten by `create`, refused when others may
read them, when their format tag is another's, or when their key material is not base64."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from hub.crypto import secretfile


class SecretError(Exception):
    pass


class NoSecret(SecretError):
    pass


FORMAT = secretfile.JsonFormat(
    "test-secret/1",
    what="a test secret",
    key_name="test key",
    error=SecretError,
    missing=lambda path: NoSecret(f"no test secret at {path}"),
)


def key_of(doc: Any) -> bytes:
    return FORMAT.decode_key(str(doc["id"]), str(doc["key"]))


def write(path: Path, doc: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_create_is_exactly_owner_read_write_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "a" / "b" / "secret"
    old_umask = os.umask(umask)
    try:
        secretfile.create(path, b"key material")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"key material"


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secretfile.create(path, b"first")
    with pytest.raises(FileExistsError):
        secretfile.create(path, b"second")
    assert path.read_bytes() == b"first"


def test_create_removes_a_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    path = tmp_path / "secret"
    with pytest.raises(OSError, match="No space"):
        secretfile.create(path, b"key material")
    assert not path.exists()  # so a second try is not refused as an existing file


def test_replace_swaps_the_whole_file_and_tightens_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    secretfile.replace(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    secretfile.create(
        path, FORMAT.dumps({"id": "k1", "key": secretfile.encode_key(b"\x00\xff" * 16)}).encode()
    )
    assert json.loads(path.read_text())["format"] == "test-secret/1"
    assert FORMAT.load(path, key_of) == b"\x00\xff" * 16


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o660])
def test_a_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    doc = {"format": "test-secret/1", "id": "k1", "key": secretfile.encode_key(b"k" * 32)}
    path = write(tmp_path / "secret.json", doc, mode)
    with pytest.raises(SecretError) as refused:
        FORMAT.load(path, key_of)
    assert str(refused.value) == (
        f"{path} is readable by others (mode {mode:o}): `chmod 600 {path}`"
    )
    path.chmod(0o400)  # the owner alone, read-only: fine
    assert FORMAT.load(path, key_of) == b"k" * 32


def test_the_advice_ends_as_the_format_says(tmp_path: Path) -> None:
    then = secretfile.JsonFormat(
        "test-secret/1", "a test secret", "test key", SecretError, NoSecret, chmod_then=" first"
    )
    path = write(tmp_path / "secret.json", {"format": "test-secret/1"}, 0o644)
    with pytest.raises(SecretError, match=r"`chmod 600 .*secret\.json` first$"):
        then.load(path, key_of)


def test_another_format_tag_is_refused(tmp_path: Path) -> None:
    doc = {"format": "test-secret/2", "id": "k1", "key": secretfile.encode_key(b"k" * 32)}
    path = write(tmp_path / "secret.json", doc)
    with pytest.raises(SecretError) as refused:
        FORMAT.load(path, key_of)
    assert str(refused.value) == f"{path}: format is not 'test-secret/1'"
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "format"}))
    with pytest.raises(SecretError, match="format is not"):
        FORMAT.load(path, key_of)


def test_bad_base64_is_refused_naming_the_key(tmp_path: Path) -> None:
    for bad in ("not base64!", "AAA", "AA==AA=="):
        path = write(tmp_path / "secret.json", {"format": "test-secret/1", "id": "k1", "key": bad})
        with pytest.raises(SecretError) as refused:
            FORMAT.load(path, key_of)
        assert str(refused.value) == "test key 'k1' is not valid base64"
        with pytest.raises(SecretError, match="'k9' is not valid base64"):
            FORMAT.decode_key("k9", bad)


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "test-secret/1"}', "\xff"])
def test_what_is_not_such_a_document_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "secret.json"
    path.write_text(text, encoding="latin-1")
    path.chmod(0o600)
    with pytest.raises(SecretError, match=rf"^{re.escape(str(path))}: not a test secret \("):
        FORMAT.load(path, key_of)


def test_the_formats_own_refusal_from_parse_goes_through_as_it_is(tmp_path: Path) -> None:
    class ValueLikeError(ValueError):
        pass

    def refuse(doc: Any) -> bytes:
        raise ValueLikeError("key 'k1' has 3 bytes, not 32")

    strict = secretfile.JsonFormat(
        "test-secret/1", "a test secret", "test key", ValueLikeError, NoSecret
    )
    path = write(tmp_path / "secret.json", {"format": "test-secret/1"})
    with pytest.raises(ValueLikeError) as refused:
        strict.load(path, refuse)
    assert str(refused.value) == "key 'k1' has 3 bytes, not 32"


def test_a_missing_file_is_the_formats_own_refusal(tmp_path: Path) -> None:
    with pytest.raises(NoSecret, match=r"no test secret at .*none\.json"):
        FORMAT.load(tmp_path / "none.json", key_of)
