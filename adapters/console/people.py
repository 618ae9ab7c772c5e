"""Operator accounts: who may sign in, with which role, and how a sign-in is checked
(argon2id passwords, an optional TOTP second factor, lockout after repeated failures)."""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.console.models import Person

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile.
_HASHER = PasswordHasher()
# A hash to check against when the name is unknown, so a wrong name takes as long as a wrong
# password and the timing tells nobody which names exist.
_DECOY = _HASHER.hash(secrets.token_hex(16))
MIN_PASSWORD = 12
# pyotp.random_base32()'s secrets: 32 base32 characters (160 bits).
_TOTP_SECRET = re.compile(r"[A-Z2-7]{32}")
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


class Role(StrEnum):
    OFFICER = "officer"  # duty officer: reads and acts
    SUPERVISOR = "supervisor"  # also approves others' proposals
    VIEWER = "viewer"  # reads only


class PeopleError(Exception):
    """A refused change to the people of a console, said in one line."""


@dataclass(frozen=True)
class SignIn:
    person: Person | None
    # ok | wrong | locked | disabled | totp_needed | totp_wrong
    result: str
    locked_until: datetime | None = None


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not 2 <= len(name) <= 64 or not set(name) <= USERNAME_CHARS:
        raise PeopleError(
            f"{username!r}: a user name is 2 to 64 of a-z, 0-9, '.', '_' and '-' "
            "(it is written into signed messages)"
        )
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PeopleError(f"a password has at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def find(session: Session, username: str) -> Person | None:
    return session.scalar(select(Person).where(Person.username == username.strip().lower()))


def add_person(
    session: Session,
    username: str,
    display_name: str,
    role: Role,
    password: str,
    now: datetime,
    *,
    language: str = "zh",
    totp: bool = False,
) -> Person:
    name = check_username(username)
    if find(session, name) is not None:
        raise PeopleError(f"{name}: there is already a person of that name")
    person = Person(
        username=name,
        display_name=display_name.strip() or name,
        role=role.value,
        password_hash=hash_password(password),
        totp_secret=new_totp_secret() if totp else None,
        disabled=False,
        failed_logins=0,
        language=language,
        must_change_password=False,
        created_at=now,
    )
    session.add(person)
    session.flush()
    return person


def sign_in(
    session: Session,
    username: str,
    password: str,
    totp_code: str,
    now: datetime,
    *,
    lockout_after: int,
    lockout_for: timedelta,
) -> SignIn:
    """Check a sign-in and count its failure. A locked or disabled account is refused
    whatever the password; the lock ends by itself after `lockout_for`."""
    person = find(session, username)
    if person is None:
        with contextlib.suppress(VerificationError):
            _HASHER.verify(_DECOY, password)
        return SignIn(None, "wrong")
    if person.disabled:
        return SignIn(person, "disabled")
    if person.locked_until is not None and person.locked_until > now:
        return SignIn(person, "locked", person.locked_until)
    try:
        _HASHER.verify(person.password_hash, password)
    except (VerificationError, InvalidHashError):
        return _failed(person, now, lockout_after, lockout_for, "wrong")
    if person.totp_secret:
        if not totp_code.strip():
            return SignIn(person, "totp_needed")
        if not pyotp.TOTP(person.totp_secret).verify(
            totp_code.strip(), for_time=now, valid_window=1
        ):
            return _failed(person, now, lockout_after, lockout_for, "totp_wrong")
    if _HASHER.check_needs_rehash(person.password_hash):
        person.password_hash = _HASHER.hash(password)
    person.failed_logins = 0
    person.locked_until = None
    return SignIn(person, "ok")


def _failed(
    person: Person, now: datetime, lockout_after: int, lockout_for: timedelta, result: str
) -> SignIn:
    person.failed_logins += 1
    if person.failed_logins >= lockout_after:
        person.locked_until = now + lockout_for
        person.failed_logins = 0
        return SignIn(person, "locked", person.locked_until)
    return SignIn(person, result)


def set_password(person: Person, password: str, *, must_change: bool) -> None:
    person.password_hash = hash_password(password)
    person.must_change_password = must_change
    person.failed_logins = 0
    person.locked_until = None


def totp_uri(username: str, institution: str, secret: str) -> str:
    """The otpauth:// URI an authenticator app reads `secret` from."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=f"StopHub {institution}")


def new_totp_secret() -> str:
    return pyotp.random_base32()


def is_totp_secret(text: str) -> bool:
    return bool(_TOTP_SECRET.fullmatch(text))


def enrol_totp(person: Person, secret: str, code: str, now: datetime) -> bool:
    """Turn the second factor on with `secret`, once the person's authenticator shows that
    it holds it (a current `code`); False, and nothing changed, otherwise. A person who has
    one already keeps it: a supervisor replaces it (`console user reset NAME --totp`)."""
    if person.totp_secret or not is_totp_secret(secret):
        return False
    if not pyotp.TOTP(secret).verify(code.strip(), for_time=now, valid_window=1):
        return False
    person.totp_secret = secret
    return True
