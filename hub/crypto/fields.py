"""Personal data sealed at rest: AES-256-GCM or SM4-GCM column values under a keyring.

Each data key has a cipher: AES-256-GCM (32-byte key, the default) or SM4-GCM (GB/T 32907,
16-byte key). The current key seals, so a keyring's cipher is its current key's. A value
sealed under AES-256-GCM is `1 | len(key id) | key id | 12-byte nonce | ciphertext+tag` (the
only layout before SM4, still written for AES, so nothing already stored changes); any other
cipher writes `2 | cipher | len(key id) | key id | 12-byte nonce | ciphertext+tag`, the
cipher byte 1 for AES-256-GCM and 2 for SM4-GCM (docs/personal-data.md, "Sealed values").
The associated data names the value's `table.column`, so a value copied into another column
(or another table) fails to open instead of leaking through the wrong field.

The keyring is process-wide (SQLAlchemy type decorators have no per-engine context): the
hub, the CLI and the tests `configure()` it once; sealing or opening before that raises
`DataKeysNotConfigured`, so nothing is ever stored in plain text by accident. Rotation
without downtime: every key opens, one is current for sealing; a running hub re-reads its
keyring file on SIGHUP and, by itself, when it meets a key id it does not know (a value
another replica sealed under a key this one has not loaded yet). See ADR 0009.

Sources, first match wins (`resolve_keyring`):
1. a keyring file given explicitly (`--data-keys FILE` or `STOPHUB_DATA_KEYS_FILE`);
2. `STOPHUB_DATA_KEYS=kid1:base64key,kid2:base64key` (the first is current), for secret
   stores that inject environment variables;
3. the default file `var/data-keys.json`.
The file is JSON, mode 0600 (a file others may read is refused):
`{"format": "stophub-data-keys/1", "current": "dk-…",
  "keys": [{"id": "dk-…", "key": "…", "cipher": "aes-256-gcm"}]}`
with keys in the order they were made (the last is the newest); a key without "cipher" (a
file written before SM4) is AES-256-GCM. In the environment, `kid:sm4-gcm:base64key` names
an SM4 key.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, LargeBinary, column, select, table, tuple_, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import TableClause
from sqlalchemy.types import TypeDecorator

from hub.crypto import secretfile

VERSION = 1  # AES-256-GCM, no cipher byte (every value sealed before SM4)
VERSION_CIPHER = 2  # a cipher byte follows
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
AES_256_GCM = "aes-256-gcm"
SM4_GCM = "sm4-gcm"
# name: (cipher byte in a version-2 value, key length)
CIPHERS: dict[str, tuple[int, int]] = {AES_256_GCM: (1, 32), SM4_GCM: (2, 16)}
_CIPHER_OF_BYTE = {code: name for name, (code, _) in CIPHERS.items()}
FILE_FORMAT = "stophub-data-keys/1"
DEFAULT_FILE = "var/data-keys.json"
ENV_KEYS = "STOPHUB_DATA_KEYS"
ENV_FILE = "STOPHUB_DATA_KEYS_FILE"
_AAD_PREFIX = b"stophub/sealed/v1\x00"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class DataKeyError(Exception):
    """A keyring that cannot be used, or a sealed value that cannot be opened."""


class DataKeysNotConfigured(DataKeyError):
    pass


class UnknownDataKey(DataKeyError):
    def __init__(self, key_id: str, context: str) -> None:
        super().__init__(
            f"{context}: sealed under data key {key_id!r}, which is not in the keyring; "
            "add that key to the keyring (stophub datakeys) and reload"
        )
        self.key_id = key_id


class SealedValueError(DataKeyError):
    """Tampered, truncated, or sealed for another column."""


def _missing(path: Path) -> DataKeysNotConfigured:
    return DataKeysNotConfigured(
        f"no data keys at {path}: give the hub's keyring with --data-keys FILE (or "
        f"${ENV_FILE}), or create one with `stophub datakeys generate --file {path}`"
    )


_FILE = secretfile.JsonFormat(
    FILE_FORMAT,
    what="a data keyring",
    key_name="data key",
    error=DataKeyError,
    missing=_missing,
    chmod_then=" first",
)


def new_key_id() -> str:
    return f"dk-{secrets.token_hex(4)}"


KeyEntry = tuple[str, bytes] | tuple[str, bytes, str]
"""(id, key) of an AES-256-GCM key, or (id, key, cipher)."""


def check_cipher(name: str, what: str = "data key") -> str:
    if name not in CIPHERS:
        raise DataKeyError(f"{what}: cipher {name!r} is not one of {', '.join(CIPHERS)}")
    return name


def _check_key(key_id: str, key: bytes, cipher: str) -> None:
    if not _KEY_ID.match(key_id):
        raise DataKeyError(f"data key id {key_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    check_cipher(cipher, f"data key {key_id!r}")
    want = CIPHERS[cipher][1]
    if len(key) != want:
        raise DataKeyError(
            f"data key {key_id!r} has {len(key)} bytes, not {want} ({cipher} takes {want})"
        )


def aad(context: str) -> bytes:
    return _AAD_PREFIX + context.encode("utf-8")


class SM4GCM:
    """SM4-GCM with AESGCM's interface (12-byte nonce, 16-byte tag after the ciphertext):
    `cryptography` has no AEAD class for it, only the block cipher in GCM mode."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("SM4 takes a 16-byte key")
        self._key = key
        try:
            self.encrypt(bytes(NONCE_BYTES), b"", b"")
        except UnsupportedAlgorithm as err:
            raise DataKeyError(
                "this build of the cryptography package cannot do SM4-GCM (its OpenSSL "
                "lacks SM4): upgrade cryptography, or keep AES-256-GCM keys"
            ) from err

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(associated_data)
        out = enc.update(data) + enc.finalize()
        return out + enc.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        if len(data) < TAG_BYTES:
            raise InvalidTag()
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
        dec.authenticate_additional_data(associated_data)
        return dec.update(body) + dec.finalize()


_AEAD = AESGCM | SM4GCM


def _aead(cipher: str, key: bytes) -> _AEAD:
    return AESGCM(key) if cipher == AES_256_GCM else SM4GCM(key)


def parse_sealed(value: bytes) -> tuple[str, int, int]:
    """(cipher, where the key id starts, where the nonce starts) of a sealed value, its
    lengths checked; raises SealedValueError for anything that is not one."""
    if len(value) < 2 or value[0] not in (VERSION, VERSION_CIPHER):
        raise SealedValueError("not a sealed value (unknown version byte)")
    if value[0] == VERSION:
        cipher, start = AES_256_GCM, 2
    else:
        named = _CIPHER_OF_BYTE.get(value[1])
        if named is None:
            raise SealedValueError(f"not a sealed value (unknown cipher byte {value[1]})")
        if len(value) < 3:
            raise SealedValueError("sealed value is truncated")
        cipher, start = named, 3
    end = start + value[start - 1]
    if len(value) < end + NONCE_BYTES + TAG_BYTES:
        raise SealedValueError("sealed value is truncated")
    return cipher, start, end


def key_id_of(value: bytes) -> str:
    """The key id a sealed value names, without opening it."""
    _cipher, start, end = parse_sealed(value)
    return value[start:end].decode("ascii", "replace")


def cipher_of(value: bytes) -> str:
    """The cipher a sealed value says sealed it, without opening it."""
    return parse_sealed(value)[0]


class Keyring:
    """Data keys by id, in the order they were made; `current` seals, all open."""

    def __init__(
        self,
        keys: Sequence[KeyEntry],
        current: str | None = None,
        *,
        source: Path | None = None,
    ) -> None:
        if not keys:
            raise DataKeyError("the keyring holds no data key")
        entries = [(e[0], e[1], e[2] if len(e) == 3 else AES_256_GCM) for e in keys]
        self.order = [kid for kid, _, _ in entries]
        if len(set(self.order)) != len(self.order):
            raise DataKeyError("the keyring names one data key id twice")
        for kid, key, cipher in entries:
            _check_key(kid, key, cipher)
        self.keys: dict[str, bytes] = {kid: key for kid, key, _ in entries}
        self.ciphers: dict[str, str] = {kid: cipher for kid, _, cipher in entries}
        self.current = current or self.order[0]
        if self.current not in self.keys:
            raise DataKeyError(f"current data key {self.current!r} is not in the keyring")
        self.source = source
        self._aeads = {kid: _aead(cipher, self.keys[kid]) for kid, _, cipher in entries}

    @property
    def cipher(self) -> str:
        """The cipher new values are sealed with: the current key's."""
        return self.ciphers[self.current]

    @staticmethod
    def new_key(cipher: str = AES_256_GCM) -> bytes:
        return secrets.token_bytes(CIPHERS[check_cipher(cipher)][1])

    @classmethod
    def generate(cls, key_id: str | None = None, cipher: str = AES_256_GCM) -> Keyring:
        kid = key_id or new_key_id()
        return cls([(kid, cls.new_key(cipher), cipher)])

    def with_key(
        self, key_id: str, key: bytes, *, make_current: bool, cipher: str = AES_256_GCM
    ) -> Keyring:
        return Keyring(
            [*self.entries(), (key_id, key, cipher)],
            key_id if make_current else self.current,
            source=self.source,
        )

    def with_current(self, key_id: str) -> Keyring:
        return Keyring(self.entries(), key_id, source=self.source)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        kid = self.current.encode("ascii")
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aeads[self.current].encrypt(nonce, plaintext, aad(context))
        cipher = self.ciphers[self.current]
        # AES keeps the version-1 layout, byte for byte what every earlier hub wrote.
        head = (
            bytes((VERSION, len(kid)))
            if cipher == AES_256_GCM
            else bytes((VERSION_CIPHER, CIPHERS[cipher][0], len(kid)))
        )
        return head + kid + nonce + sealed

    def open(self, value: bytes, context: str) -> bytes:
        cipher, start, end = parse_sealed(value)
        kid = value[start:end].decode("ascii", "replace")
        aead = self._aeads.get(kid)
        if aead is None:
            raise UnknownDataKey(kid, context)
        if self.ciphers[kid] != cipher:
            raise SealedValueError(
                f"{context}: the value says {cipher}, but data key {kid!r} is a "
                f"{self.ciphers[kid]} key (tampered)"
            )
        try:
            return aead.decrypt(
                value[end : end + NONCE_BYTES], value[end + NONCE_BYTES :], aad(context)
            )
        except InvalidTag:
            raise SealedValueError(
                f"{context}: sealed value does not open under data key {kid!r} "
                "(tampered, or copied from another column)"
            ) from None

    def opener(self, context: str) -> Callable[[bytes], bytes]:
        """`open` for one column with the lookups done once, for scans over millions of
        rows (verifying the audit log opens every entry)."""
        by_cipher: dict[str, dict[bytes, _AEAD]] = {name: {} for name in CIPHERS}
        for kid, aead in self._aeads.items():
            by_cipher[self.ciphers[kid]][kid.encode("ascii")] = aead
        aes = by_cipher[AES_256_GCM]
        ciphers = {kid.encode("ascii"): cipher for kid, cipher in self.ciphers.items()}
        associated = aad(context)

        def open_one(value: bytes) -> bytes:
            # Version 1 inline: the audit verification opens a million of them.
            if len(value) >= 2 and value[0] == VERSION:
                end = 2 + value[1]
                kid = value[2:end]
                aead = aes.get(kid)
                cipher = AES_256_GCM
            else:
                try:
                    cipher, start, end = parse_sealed(value)
                except SealedValueError as err:
                    raise SealedValueError(f"{context}: {err}") from None
                kid = value[start:end]
                aead = by_cipher[cipher].get(kid)
            if aead is None:
                name = kid.decode("ascii", "replace")
                if kid not in ciphers:
                    raise UnknownDataKey(name, context)
                raise SealedValueError(
                    f"{context}: the value says {cipher}, but data key {name!r} is a "
                    f"{ciphers[kid]} key (tampered)"
                )
            try:
                return aead.decrypt(
                    value[end : end + NONCE_BYTES], value[end + NONCE_BYTES :], associated
                )
            except (InvalidTag, ValueError):
                raise SealedValueError(
                    f"{context}: sealed value does not open under data key "
                    f"{kid.decode('ascii', 'replace')!r} (tampered, or copied from "
                    "another column)"
                ) from None

        return open_one

    def pairs(self) -> list[tuple[str, bytes]]:
        """The keys' material in order (what derivations from a key need)."""
        return [(kid, self.keys[kid]) for kid in self.order]

    def entries(self) -> list[tuple[str, bytes, str]]:
        """The keys in order with their ciphers, to rebuild the ring in another process."""
        return [(kid, self.keys[kid], self.ciphers[kid]) for kid in self.order]

    # ---- files and the environment -----------------------------------------------------------

    def to_json(self) -> str:
        return _FILE.dumps(
            {
                "current": self.current,
                "keys": [
                    {"id": k, "key": secretfile.encode_key(self.keys[k]), "cipher": c}
                    for k, _, c in self.entries()
                ],
            },
            indent=2,
        )

    def save(self, path: str | Path) -> None:
        """Write atomically with mode 0600: a hub re-reading mid-write sees old or new."""
        secretfile.replace(path, (self.to_json() + "\n").encode("utf-8"))


def _from_document(doc: Any) -> tuple[list[KeyEntry], str]:
    keys: list[KeyEntry] = [
        (
            str(k["id"]),
            _FILE.decode_key(str(k["id"]), str(k["key"])),
            str(k.get("cipher", AES_256_GCM)),
        )
        for k in doc["keys"]
    ]
    return keys, str(doc["current"])


def load_keyring_file(path: str | Path) -> Keyring:
    path = Path(path)
    keys, current = _FILE.load(path, _from_document)
    try:
        return Keyring(keys, current, source=path)
    except DataKeyError as err:
        raise DataKeyError(f"{path}: {err}") from err


def parse_keyring_env(value: str) -> Keyring:
    """`kid1:base64key,kid2:base64key`, the first current; `kid:sm4-gcm:base64key` names
    the cipher (base64 has no colon, so the middle part can only be one)."""
    keys: list[KeyEntry] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        if len(parts) not in (2, 3):
            raise DataKeyError(
                f"${ENV_KEYS}: give KEY_ID:BASE64KEY or KEY_ID:CIPHER:BASE64KEY, comma separated"
            )
        cipher = parts[1] if len(parts) == 3 else AES_256_GCM
        keys.append((parts[0], _FILE.decode_key(parts[0], parts[-1]), cipher))
    return Keyring(keys)


def resolve_keyring(
    file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Keyring:
    """An explicit file, else the environment's keys, else the default file (module doc)."""
    env = os.environ if environ is None else environ
    explicit = file or env.get(ENV_FILE)
    if explicit:
        return load_keyring_file(explicit)
    if env.get(ENV_KEYS):
        return parse_keyring_env(env[ENV_KEYS])
    return load_keyring_file(DEFAULT_FILE)


# ---- the process-wide keyring -------------------------------------------------------------------

_lock = threading.Lock()
_active: Keyring | None = None


def configure(keyring: Keyring | None) -> None:
    """Make `keyring` the one every sealed column uses (None: unconfigure)."""
    global _active
    with _lock:
        _active = keyring


def configured() -> Keyring | None:
    return _active


def keyring() -> Keyring:
    ring = _active
    if ring is None:
        raise DataKeysNotConfigured(
            "no data keys configured: personal data is never stored in plain text. Create "
            f"a keyring with `stophub datakeys generate` ({DEFAULT_FILE}), or set "
            f"{ENV_FILE} or {ENV_KEYS}"
        )
    return ring


def reload() -> Keyring:
    """Re-read the active keyring's file (SIGHUP, or an unknown key id met)."""
    ring = keyring()
    if ring.source is None:
        return ring
    fresh = load_keyring_file(ring.source)
    with _lock:
        global _active
        if _active is ring:
            _active = fresh
    return fresh


def seal(plaintext: bytes, context: str) -> bytes:
    return keyring().seal(plaintext, context)


def open_sealed(value: bytes, context: str) -> bytes:
    ring = keyring()
    try:
        return ring.open(value, context)
    except UnknownDataKey:
        if ring.source is None:
            raise
    # Another replica may seal under a key made current after this process loaded its file.
    return reload().open(value, context)


# ---- column types -------------------------------------------------------------------------------


_T = TypeVar("_T", bytes, str)


class SealedType(TypeDecorator[_T]):
    """Values sealed on the way in and opened on the way out; BLOB/BYTEA in the schema.

    `context` is the column's `table.column`, bound into each value. Sealed columns cannot
    be searched or compared in SQL (each seal has a fresh nonce); only IS NULL works.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def to_bytes(self, value: _T) -> bytes:
        raise NotImplementedError

    def from_bytes(self, raw: bytes) -> _T:
        raise NotImplementedError

    def process_bind_param(self, value: _T | None, dialect: Dialect) -> bytes | None:
        return None if value is None else seal(self.to_bytes(value), self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> _T | None:
        if value is None:
            return None
        return self.from_bytes(open_sealed(bytes(value), self.context))


class Sealed(SealedType[bytes]):
    """Bytes (signed envelopes, kept byte for byte)."""

    cache_ok = True  # looked up on each class itself, not inherited

    def to_bytes(self, value: bytes) -> bytes:
        return bytes(value)

    def from_bytes(self, raw: bytes) -> bytes:
        return raw


class SealedText(SealedType[str]):
    """Text, sealed as UTF-8."""

    cache_ok = True

    def to_bytes(self, value: str) -> bytes:
        return value.encode("utf-8")

    def from_bytes(self, raw: bytes) -> str:
        return raw.decode("utf-8")


# ---- walking sealed rows (re-encryption, status, migrations) -----------------------------------


@dataclass(frozen=True)
class SealedTable:
    """One table's primary key and sealed columns, by name (no ORM types involved)."""

    name: str
    primary_key: tuple[str, ...]
    columns: tuple[str, ...]

    def context(self, col: str) -> str:
        return f"{self.name}.{col}"

    def lightweight(self) -> TableClause:
        # Untyped columns: values travel as the driver stores them, never through `Sealed`.
        return table(self.name, *(column(c) for c in (*self.primary_key, *self.columns)))


def raw_rows(
    conn: Connection, spec: SealedTable, batch: int
) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """The raw stored values of `spec`'s columns, in primary-key batches (keyset paging)."""
    t = spec.lightweight()
    pk = [t.c[c] for c in spec.primary_key]
    after: tuple[Any, ...] | None = None
    while True:
        stmt = select(*pk, *(t.c[c] for c in spec.columns)).order_by(*pk).limit(batch)
        if after is not None:
            stmt = stmt.where(tuple_(*pk) > tuple_(*after) if len(pk) > 1 else pk[0] > after[0])
        rows = conn.execute(stmt).all()
        if not rows:
            return
        n = len(pk)
        yield [(tuple(r[:n]), dict(zip(spec.columns, r[n:], strict=True))) for r in rows]
        after = tuple(rows[-1][:n])
        if len(rows) < batch:
            return


@dataclass
class Rewritten:
    rows: int = 0
    values: int = 0
    raced: int = 0  # changed by someone else between our read and our write: left as is


def rewrite_rows(
    conn: Connection,
    spec: SealedTable,
    change: Callable[[str, Any], bytes | None],
    *,
    batch: int = 500,
    commit: Callable[[], None] | None = None,
) -> Rewritten:
    """Replace each non-null value `v` of column `c` by `change(c, v)` (None: leave it).

    The update matches the old raw value too, so a value the hub rewrote meanwhile is left
    as the hub wrote it. `commit` is called after each batch (short transactions on a live
    database).
    """
    t = spec.lightweight()
    done = Rewritten()
    for rows in raw_rows(conn, spec, batch):
        for key, values in rows:
            done.rows += 1
            for col, old in values.items():
                new = None if old is None else change(col, old)
                if new is None:
                    continue
                where = [t.c[c] == v for c, v in zip(spec.primary_key, key, strict=True)]
                result = conn.execute(update(t).where(*where, t.c[col] == old).values({col: new}))
                if result.rowcount:
                    done.values += 1
                else:
                    done.raced += 1
        if commit is not None:
            commit()
    return done


def reencrypt(
    conn: Connection, specs: Sequence[SealedTable], ring: Keyring, *, batch: int = 500
) -> dict[str, Rewritten]:
    """Re-seal every value not under `ring.current`, batch by batch, committing each: safe
    while hubs serve (a row they change meanwhile is skipped and counted as raced), and
    idempotent (a second run finds nothing to do)."""

    def change(spec: SealedTable) -> Callable[[str, Any], bytes | None]:
        def reseal(col: str, value: Any) -> bytes | None:
            raw = bytes(value)
            # A key's cipher is fixed, so a value under the current key is under its cipher.
            if key_id_of(raw) == ring.current:
                return None
            return ring.seal(ring.open(raw, spec.context(col)), spec.context(col))

        return reseal

    return {
        spec.name: rewrite_rows(conn, spec, change(spec), batch=batch, commit=conn.commit)
        for spec in specs
    }


def key_usage(
    conn: Connection, specs: Sequence[SealedTable], *, batch: int = 1000
) -> dict[str, dict[str, int]]:
    """Stored values per key id, per table ("(not sealed)" for a value that is not)."""
    usage: dict[str, dict[str, int]] = {}
    for spec in specs:
        counts = usage.setdefault(spec.name, {})
        for rows in raw_rows(conn, spec, batch):
            for _key, values in rows:
                for value in values.values():
                    if value is None:
                        continue
                    try:
                        kid = key_id_of(as_bytes(value))
                    except SealedValueError:
                        kid = "(not sealed)"
                    counts[kid] = counts.get(kid, 0) + 1
        conn.rollback()  # end each table's read; a long snapshot holds back a busy database
    return usage


def as_bytes(value: Any) -> bytes:
    """A raw stored value as bytes (SQLite hands back text it stored as TEXT as str)."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
