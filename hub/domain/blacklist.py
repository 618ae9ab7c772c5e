"""The blacklist and punishment list (涉案账户名单 / 惩戒名单): entries, their terms, the versioned
change log, and the digest a platform's copy proves itself identical with (issue 7).

Plain Python. The hub keeps one list; every addition, removal and expiry is a numbered change,
and a platform syncs from the last version it has. The digest is an order-independent sum of
one SHA-256 per live entry, so both the hub and a replica keep it up to date with each change
instead of rehashing a million entries (ADR 14 when the rest of the issue lands).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from hub.domain.cases import ACCOUNT_PATTERN, add_months
from hub.domain.errors import FailedPrecondition, InvalidArgument
from hub.domain.institutions import CODE_PATTERN

DIGEST_MODULUS = 2**256
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Mainland resident ID: 17 digits and a check character (digit or X).
ID_NUMBER_PATTERN = re.compile(r"^[0-9]{17}[0-9X]$")


class EntryKind(StrEnum):
    # A fraud-involved account (institution and account number).
    ACCOUNT = "account"
    # A person on the punishment list (ID number and name).
    PERSON = "person"


class Basis(StrEnum):
    """Why a party is listed; the basis sets the term."""

    ACCOUNT_TRADER = "account_trader"  # sold, rented or lent accounts: 2 years
    CONVICTED = "convicted"  # convicted of the fraud: 3 years


class ChangeOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    EXPIRE = "expire"


@dataclass(frozen=True)
class Terms:
    """The 2024 joint punishment rules' numbers; every one is configuration."""

    months: tuple[tuple[Basis, int], ...] = ((Basis.ACCOUNT_TRADER, 24), (Basis.CONVICTED, 36))
    # A party is never listed for longer than this without a break.
    max_run_months: int = 60
    # A new listing this soon after the last one ended continues the same run: a short pause
    # must not restart the five years.
    run_gap: timedelta = timedelta(days=30)

    def of(self, basis: Basis) -> int:
        return dict(self.months)[basis]


@dataclass(frozen=True)
class Subject:
    """Who or what is listed, in the normal form the list is keyed and matched by."""

    kind: EntryKind
    # ACCOUNT: "INSTITUTION/ACCOUNT"; PERSON: the ID number.
    key: str
    # The holder's or person's name as published (not part of the key).
    name: str

    @staticmethod
    def account(institution: str, number: str, holder: str) -> Subject:
        institution = institution.strip().upper()
        number = number.strip()
        if not CODE_PATTERN.match(institution):
            raise InvalidArgument("account.institution_code", "is not an institution code")
        if not ACCOUNT_PATTERN.match(number):
            raise InvalidArgument(
                "account.account_number", "must be 4-40 letters, digits or '-' (no spaces)"
            )
        return Subject(EntryKind.ACCOUNT, f"{institution}/{number}", _name(holder))

    @staticmethod
    def person(id_number: str, name: str) -> Subject:
        normal = id_number.strip().upper()
        if not ID_NUMBER_PATTERN.match(normal):
            raise InvalidArgument(
                "person.id_number", "must be 18 characters: 17 digits and a digit or X"
            )
        if not name.strip():
            raise InvalidArgument("person.name", "is required")
        return Subject(EntryKind.PERSON, normal, _name(name))


def _name(text: str) -> str:
    # Full-width and composed forms of the same name must compare equal on every platform.
    return unicodedata.normalize("NFKC", text).strip()


@dataclass(eq=False)
class Entry:
    entry_id: str
    kind: EntryKind
    subject_key: str
    name: str
    basis: Basis
    reason: str
    source_case_id: str
    listed_at: datetime
    expires_at: datetime
    listed_by: str
    ended_at: datetime | None = None
    # "removed" or "expired" once ended.
    end: str = ""

    @property
    def live(self) -> bool:
        return self.ended_at is None

    def clear_hash(self) -> int:
        """The entry's leaf hash in the CLEAR form of the list."""
        return clear_leaf_hash(
            self.entry_id,
            self.kind.value,
            self.subject_key,
            self.name,
            self.basis.value,
            self.reason,
            self.source_case_id,
            micros(self.listed_at),
            micros(self.expires_at),
        )

    def token_hash(self, token: bytes) -> int:
        """The entry's leaf hash in the TOKENS form, `token` being its subject's token."""
        return token_leaf_hash(
            self.entry_id,
            self.kind.value,
            token,
            self.basis.value,
            self.source_case_id,
            micros(self.listed_at),
            micros(self.expires_at),
        )

    def leaf_hash(self) -> int:
        return self.clear_hash()


# ---- the digest's leaves (docs/blacklist.md): what a copy in any language recomputes ------------

CLEAR_LEAF_PREFIX = b"stophub-list-entry\x00"
TOKEN_LEAF_PREFIX = b"stophub-list-token\x00"


def micros(at: datetime) -> int:
    """Microseconds since the Unix epoch: times in a leaf are integers, not text, so every
    language writes them the same way."""
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _fields(*fields: str) -> bytes:
    # Length-prefixed, so no two different entries give the same bytes.
    out = bytearray()
    for f in fields:
        data = f.encode()
        out += len(data).to_bytes(4, "big")
        out += data
    return bytes(out)


def clear_leaf_hash(
    entry_id: str,
    kind: str,
    subject_key: str,
    name: str,
    basis: str,
    reason: str,
    source_case_id: str,
    listed_us: int,
    expires_us: int,
) -> int:
    leaf = _fields(
        entry_id, kind, subject_key, name, basis, reason, source_case_id,
        str(listed_us), str(expires_us),
    )  # fmt: skip
    return int.from_bytes(hashlib.sha256(CLEAR_LEAF_PREFIX + leaf).digest())


def token_leaf_hash(
    entry_id: str,
    kind: str,
    token: bytes,
    basis: str,
    source_case_id: str,
    listed_us: int,
    expires_us: int,
) -> int:
    leaf = _fields(
        entry_id, kind, token.hex(), basis, source_case_id, str(listed_us), str(expires_us)
    )
    return int.from_bytes(hashlib.sha256(TOKEN_LEAF_PREFIX + leaf).digest())


def subject_token(key: bytes, subject_key: str) -> bytes:
    """The keyed hash a TOKENS copy names a subject by: HMAC-SHA256 under the network's list
    key of the subject key ("INSTITUTION/ACCOUNT" or the ID number, in normal form)."""
    return hmac.new(key, subject_key.encode(), hashlib.sha256).digest()


def list_entry(
    entry_id: str,
    subject: Subject,
    basis: Basis,
    reason: str,
    source_case_id: str,
    *,
    history: Sequence[Entry],
    now: datetime,
    listed_by: str,
    terms: Terms,
) -> Entry:
    """A new listing of `subject`, given its earlier listings. The term follows the basis,
    and a party listed without a break is never listed for more than the run's cap: a new
    listing that would run past it ends at the cap; one that would start there is refused."""
    if not reason.strip():
        raise InvalidArgument("reason", "say why the party is listed; the party is told")
    if not source_case_id.strip():
        raise InvalidArgument("source_case_id", "name the case the listing comes from")
    if any(e.live and e.expires_at > now for e in history):
        raise FailedPrecondition(
            "ALREADY_LISTED",
            f"{subject.key} is listed now; a new listing may follow when the current one ends",
        )
    run_start = _run_start(history, now, terms.run_gap)
    cap = add_months(run_start, terms.max_run_months)
    expires = min(add_months(now, terms.of(basis)), cap)
    if expires <= now:
        raise FailedPrecondition(
            "LISTING_CAP_REACHED",
            f"{subject.key} has been listed without a break since {run_start.date()}: at most "
            f"{terms.max_run_months // 12} years in a row",
        )
    return Entry(
        entry_id,
        subject.kind,
        subject.key,
        subject.name,
        basis,
        reason.strip(),
        source_case_id.strip(),
        now,
        expires,
        listed_by,
    )


def _run_start(history: Sequence[Entry], now: datetime, gap: timedelta) -> datetime:
    """When the subject's unbroken run of listings began, counting a new one starting now."""
    start = now
    for e in sorted(history, key=lambda e: e.listed_at, reverse=True):
        if e.end == "removed":
            break  # a removal (an upheld appeal, a mistake) ends the run for good
        ended = e.ended_at if e.ended_at is not None else e.expires_at
        if ended < start - gap:
            break
        start = min(start, e.listed_at)
    return start


@dataclass(frozen=True)
class Change:
    """One numbered change of the list."""

    version: int
    op: ChangeOp
    entry_id: str
    at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """What a copy must match at `version`: how many live entries and their digest."""

    version: int
    count: int
    digest: int

    @property
    def digest_hex(self) -> str:
        return self.digest.to_bytes(32, "big").hex()


class ListDigest:
    """The order-independent digest of a set of entries: the sum of their leaf hashes modulo
    2^256. Adding or removing one entry is one hash and one addition, for the hub and for a
    replica alike. It detects a copy that missed, doubled or altered an entry; it is not meant
    to resist someone who chooses entries to collide, which only the hub publishes, signed."""

    def __init__(self, value: int = 0, count: int = 0) -> None:
        self.value = value % DIGEST_MODULUS
        self.count = count

    @staticmethod
    def of(entries: Iterable[Entry]) -> ListDigest:
        d = ListDigest()
        for e in entries:
            d.add(e)
        return d

    def add(self, entry: Entry) -> None:
        self.add_hash(entry.leaf_hash())

    def remove(self, entry: Entry) -> None:
        self.remove_hash(entry.leaf_hash())

    def add_hash(self, leaf_hash: int) -> None:
        self.value = (self.value + leaf_hash) % DIGEST_MODULUS
        self.count += 1

    def remove_hash(self, leaf_hash: int) -> None:
        self.value = (self.value - leaf_hash) % DIGEST_MODULUS
        self.count -= 1

    @property
    def digest_bytes(self) -> bytes:
        return self.value.to_bytes(32, "big")

    def checkpoint(self, version: int) -> Checkpoint:
        return Checkpoint(version, self.count, self.value)
