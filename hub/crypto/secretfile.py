"""Secret files: how the hub writes and reads the files that hold key material.

The data keyring (hub/crypto/fields.py), the network's list key (hub/crypto/listkey.py) and
private signing keys (hub/crypto/keys.py) are all written here, readable by their owner
only: mode 0600, set when the file is created, so a key is never briefly readable by others.

- `create` makes a new file and never replaces one (O_EXCL: checking and creating are one
  step; an existing file is a FileExistsError): for keys whose replacement would orphan what
  depends on them.
- `replace` writes a new version atomically through such a file beside it: a process
  re-reading mid-write sees the old version or the new one, never half of either.

The JSON files are described by a `JsonFormat`: a format tag (`{"format": "…", …}`) and key
material in base64. Reading one refuses a file that anyone but its owner may read, one
without its tag, one that is not such a document, and bad base64, each with a message that
names the file (or the key) and what to do.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

MODE = 0o600

_T = TypeVar("_T")


def create(path: str | Path, data: bytes) -> None:
    """Write `data` to a new file at `path`, mode 0600; never replaces a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _create(target, data)


def replace(path: str | Path, data: bytes) -> None:
    """Write `data` to `path`, mode 0600, atomically: through a new file beside it, renamed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    _create(tmp, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    try:
        # The umask may have narrowed the mode further, never widened it; this pins it to
        # exactly 0600 regardless.
        os.fchmod(fd, MODE)
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        if fd != -1:
            os.close(fd)
        target.unlink(missing_ok=True)
        raise


def encode_key(key: bytes) -> str:
    """Key material as a JSON secret file holds it."""
    return base64.b64encode(key).decode()


@dataclass(frozen=True)
class JsonFormat:
    """One kind of JSON secret file: its format tag, and how its refusals read.

    Every refusal is an `error`; a file that is not there is `missing(path)`, whose message
    says where the key may be given instead and how to make one.
    """

    tag: str  # the document's "format", e.g. "stophub-list-key/1"
    what: str  # the document, in "{path}: not {what} (…)": "a list key"
    key_name: str  # one key in it, in "{key_name} 'lk-…' is not valid base64": "list key"
    error: type[Exception]
    missing: Callable[[Path], Exception]
    chmod_then: str = ""  # words after the "`chmod 600 FILE`" advice, as each kind says it

    def dumps(self, body: dict[str, Any], *, indent: int | None = None) -> str:
        """The document: the format tag first, then `body`."""
        return json.dumps({"format": self.tag, **body}, indent=indent)

    def decode_key(self, key_id: str, text: str) -> bytes:
        """Key material from base64 (strict: any other character is refused)."""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise self.error(f"{self.key_name} {key_id!r} is not valid base64") from err

    def load(self, path: Path, parse: Callable[[Any], _T]) -> _T:
        """`parse` of the document at `path`, once the file is the owner's only and carries
        this format's tag. A KeyError, TypeError, ValueError or AttributeError from `parse`
        (a field missing or of the wrong type) refuses the file as not this kind of document;
        an `error` it raises goes through as it is."""
        if not path.exists():
            raise self.missing(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise self.error(
                f"{path} is readable by others (mode {mode:o}): `chmod 600 {path}`{self.chmod_then}"
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != self.tag:
                raise self.error(f"{path}: format is not {self.tag!r}")
            return parse(doc)
        except self.error:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise self.error(f"{path}: not {self.what} ({err})") from err
