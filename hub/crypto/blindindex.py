"""The blind index of the victim's name and ID number: equality search over sealed columns.

`cases.victim_name` and `cases.victim_id_number` are sealed (ADR 9): each seal has a fresh
nonce, so SQL cannot compare them. Beside each the hub keeps a token, HMAC-SHA256 of the
normalised value under a key derived with HKDF-SHA256 from the data keyring's oldest key
(its own info label, so it is never an encryption key, and never stored). Equal values give
equal tokens; nothing else can be learnt from a token without the keyring
(docs/personal-data.md). Each row records the id of the data key its tokens were derived
from, so a keyring whose oldest key changed is re-indexed at the hub's next start
(`SqlStore.index_victims`).
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.crypto import fields

# HKDF info of the index key: no other key of the hub is derived with it.
INDEX_INFO = b"stophub/blind-index/v1"
_SPACES = re.compile(r"\s+")


def normalise_name(value: str) -> str:
    """Unicode NFKC, trimmed, inner whitespace collapsed to one space, case-folded."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value).strip()).casefold()


def normalise_id_number(value: str) -> str:
    """As a name, then without spaces and hyphens, upper case (the check digit X)."""
    return normalise_name(value).replace(" ", "").replace("-", "").upper()


@dataclass(frozen=True)
class VictimTokens:
    name: bytes | None
    id_number: bytes | None
    key_id: str


class BlindIndex:
    """Tokens under one index key (derived from one data key)."""

    def __init__(self, key_id: str, data_key: bytes) -> None:
        self.key_id = key_id
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INDEX_INFO).derive(
            data_key
        )

    def _token(self, purpose: bytes, normalised: str) -> bytes | None:
        if not normalised:
            return None
        return hmac.new(self._key, purpose + b"\x00" + normalised.encode("utf-8"), sha256).digest()

    def name_token(self, name: str) -> bytes | None:
        return self._token(b"victim_name", normalise_name(name))

    def id_number_token(self, id_number: str) -> bytes | None:
        return self._token(b"victim_id_number", normalise_id_number(id_number))

    def victim(self, name: str, id_number: str) -> VictimTokens:
        return VictimTokens(self.name_token(name), self.id_number_token(id_number), self.key_id)


def current_index() -> BlindIndex:
    """The index under the configured keyring's oldest data key."""
    ring = fields.keyring()
    oldest = ring.order[0]
    return _index(oldest, ring.keys[oldest])


@lru_cache(maxsize=8)
def _index(key_id: str, data_key: bytes) -> BlindIndex:
    # Every report asks: the key derivation is done once per data key, not per report.
    return BlindIndex(key_id, data_key)
