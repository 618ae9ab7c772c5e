"""Member institutions, their signing keys and duty contacts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound

HUB_CODE = "HUB"
CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,31}$")


class InstitutionKind(StrEnum):
    BANK = "bank"
    PAYMENT_INSTITUTION = "payment_institution"
    ANTI_FRAUD_CENTRE = "anti_fraud_centre"
    REGULATOR = "regulator"
    AUDITOR = "auditor"
    HUB = "hub"

    @property
    def keeps_accounts(self) -> bool:
        return self in (InstitutionKind.BANK, InstitutionKind.PAYMENT_INSTITUTION)


class KeyState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class ContactRole(StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"
    # Reached when a deadline is breached; optional.
    SUPERVISOR = "supervisor"


@dataclass(eq=False)
class InstitutionKey:
    key_id: str
    algorithm: str
    public_key: bytes
    created_at: datetime
    state: KeyState = KeyState.ACTIVE
    revoked_at: datetime | None = None
    institution_code: str = ""
    # The end of a rotation's overlap: the key signs nothing new after this instant, but
    # what it signed before still verifies.
    not_after: datetime | None = None


@dataclass(frozen=True)
class AlgorithmPolicy:
    """Which signature algorithms the network lets each member sign with (the policy file's
    `[signing]`, docs/signing.md "Which algorithms a member may use"): a network that must
    meet the commercial-cryptography rules requires sm2-sm3. None allows every algorithm the
    hub supports."""

    allowed: frozenset[str] | None = None
    # Per institution code, instead of `allowed`.
    by_institution: tuple[tuple[str, frozenset[str]], ...] = ()

    def allowed_for(self, code: str) -> frozenset[str] | None:
        return next((algs for c, algs in self.by_institution if c == code), self.allowed)

    def allows(self, code: str, algorithm: str) -> bool:
        allowed = self.allowed_for(code)
        return allowed is None or algorithm in allowed


@dataclass(eq=False)
class DutyContact:
    role: ContactRole
    name: str
    phone: str
    email: str = ""
    position: int = 0
    institution_code: str = ""


@dataclass(eq=False)
class Institution:
    code: str
    display_name: str
    kind: InstitutionKind
    created_at: datetime
    keys: list[InstitutionKey] = field(default_factory=list)
    contacts: list[DutyContact] = field(default_factory=list)

    @staticmethod
    def register(
        code: str,
        display_name: str,
        kind: InstitutionKind,
        now: datetime,
        contacts: list[DutyContact],
    ) -> Institution:
        if not CODE_PATTERN.match(code):
            raise InvalidArgument(
                "code", f"{code!r} is not a valid code: 2-32 of A-Z, 0-9, '_' or '-'"
            )
        if not display_name.strip():
            raise InvalidArgument("display_name", "must not be empty")
        roles = [c.role for c in contacts]
        if kind is not InstitutionKind.HUB and (
            ContactRole.PRIMARY not in roles or ContactRole.BACKUP not in roles
        ):
            raise InvalidArgument(
                "duty_contacts",
                "an institution keeps a primary and a backup duty contact (A/B roles)",
            )
        for i, c in enumerate(contacts):
            if not c.name.strip() or not c.phone.strip():
                raise InvalidArgument(f"duty_contacts[{i}]", "name and phone are required")
            c.position = i
        return Institution(code, display_name, kind, now, [], list(contacts))

    def add_key(self, key_id: str, algorithm: str, public_key: bytes, now: datetime) -> None:
        if any(k.key_id == key_id for k in self.keys):
            raise FailedPrecondition(
                "KEY_EXISTS", f"key {key_id} is already registered for {self.code}"
            )
        self.keys.append(InstitutionKey(key_id, algorithm, public_key, now))

    def revoke_key(self, key_id: str, now: datetime) -> None:
        key = self.key(key_id)
        if key is None:
            raise NotFound("KEY_NOT_FOUND", f"{self.code} has no key {key_id}")
        if key.state is KeyState.REVOKED:
            raise FailedPrecondition("KEY_REVOKED", f"key {key_id} is already revoked")
        key.state = KeyState.REVOKED
        key.revoked_at = now

    def key(self, key_id: str) -> InstitutionKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def active_keys(self) -> list[InstitutionKey]:
        return [k for k in self.keys if k.state is KeyState.ACTIVE]

    def usable_keys(self, now: datetime) -> list[InstitutionKey]:
        """The keys that may sign a new message at `now`."""
        return [k for k in self.active_keys() if k.not_after is None or now < k.not_after]

    def rotate_key(
        self, key_id: str, algorithm: str, public_key: bytes, now: datetime, overlap: timedelta
    ) -> list[InstitutionKey]:
        """Add a key and retire every other usable key once `overlap` has passed, so messages
        already signed (and senders not yet switched) keep working until then. Returns the
        keys being retired."""
        if overlap < timedelta(0):
            raise InvalidArgument("overlap", "must not be negative")
        retiring = self.usable_keys(now)
        self.add_key(key_id, algorithm, public_key, now)
        until = now + overlap
        for key in retiring:
            key.not_after = until
        return retiring

    def key_valid_at(self, key_id: str, at: datetime) -> tuple[bool, str]:
        """Whether `key_id` could sign a message the hub received at `at`, and if not, why:
        what decides evidence is the key's state then, not now."""
        key = self.key(key_id)
        if key is None:
            return False, f"{self.code} never registered key {key_id}"
        if at < key.created_at:
            return False, f"key {key_id} was registered only at {key.created_at.isoformat()}"
        # Revocation refuses every message from then on, so one recorded at that very instant
        # was accepted before it.
        if key.revoked_at is not None and at > key.revoked_at:
            return False, f"key {key_id} was revoked at {key.revoked_at.isoformat()}"
        if key.not_after is not None and at >= key.not_after:
            return False, f"key {key_id} was rotated out at {key.not_after.isoformat()}"
        return True, ""
