"""The network's list key: the HMAC-SHA256 key that turns account and ID numbers into the
tokens of the blacklist's TOKENS form (docs/blacklist.md).

Unlike the data keys (hub/crypto/fields.py), which never leave the hub, the list key is shared:
every member that matches its customers against a TOKENS copy holds it. The hub also uses it
to index its own entries, so it must not change while entries are listed.

Sources, first match wins: an explicit file (`--list-key FILE` or `STOPHUB_LIST_KEY_FILE`),
`STOPHUB_LIST_KEY=kid:base64key`, the default file `var/list-key.json`. The file is JSON, mode
0600: `{"format": "stophub-list-key/1", "id": "lk-…", "key": "…"}`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.crypto import secretfile
from hub.domain.blacklist import subject_token

FILE_FORMAT = "stophub-list-key/1"
DEFAULT_FILE = "var/list-key.json"
ENV_FILE = "STOPHUB_LIST_KEY_FILE"
ENV_KEY = "STOPHUB_LIST_KEY"
KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ListKeyError(Exception):
    pass


def _missing(path: Path) -> ListKeyError:
    return ListKeyError(
        f"no list key at {path}: give the network's list key with --list-key FILE (or "
        f"${ENV_FILE}), or create one with `stophub listkey generate --file {path}`"
    )


_FILE = secretfile.JsonFormat(
    FILE_FORMAT, what="a list key", key_name="list key", error=ListKeyError, missing=_missing
)


@dataclass(frozen=True)
class ListKey:
    key_id: str
    key: bytes

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.key_id):
            raise ListKeyError(f"list key id {self.key_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if len(self.key) != KEY_BYTES:
            raise ListKeyError(f"list key {self.key_id!r} has {len(self.key)} bytes, not 32")

    @classmethod
    def generate(cls) -> ListKey:
        return cls(f"lk-{secrets.token_hex(4)}", secrets.token_bytes(KEY_BYTES))

    def token(self, subject_key: str) -> bytes:
        return subject_token(self.key, subject_key)

    def to_json(self) -> str:
        return _FILE.dumps({"id": self.key_id, "key": secretfile.encode_key(self.key)})

    def save(self, path: str | Path) -> None:
        """Write with mode 0600, refusing to overwrite: a new key re-tokenises every copy."""
        secretfile.create(path, (self.to_json() + "\n").encode("utf-8"))


def _from_document(doc: Any) -> ListKey:
    kid = str(doc["id"])
    return ListKey(kid, _FILE.decode_key(kid, str(doc["key"])))


def load_list_key_file(path: str | Path) -> ListKey:
    return _FILE.load(Path(path), _from_document)


def resolve_list_key(
    file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> ListKey:
    """An explicit file, else the environment's key, else the default file (module doc)."""
    env = os.environ if environ is None else environ
    explicit = file or env.get(ENV_FILE)
    if explicit:
        return load_list_key_file(explicit)
    value = env.get(ENV_KEY)
    if value:
        kid, sep, b64 = value.partition(":")
        if not sep:
            raise ListKeyError(f"${ENV_KEY}: give KEY_ID:BASE64KEY")
        return ListKey(kid.strip(), _FILE.decode_key(kid.strip(), b64.strip()))
    return load_list_key_file(DEFAULT_FILE)
