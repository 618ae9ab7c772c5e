"""The hub operator's commands: the institution registry and its keys.

They run on the hub's own database (the `stophub` CLI on the hub host) and are audited
like every other change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from hub.crypto.signing import ALGORITHMS, key_id_for
from hub.domain.errors import AlreadyExists, InvalidArgument, NotFound
from hub.domain.institutions import (
    HUB_CODE,
    DutyContact,
    Institution,
    InstitutionKind,
)
from hub.service.ports import AuditEntry, Clock, UnitOfWorkFactory


@dataclass(frozen=True)
class NewKey:
    algorithm: str
    public_key: bytes


class Registry:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    def add_institution(
        self,
        code: str,
        display_name: str,
        kind: InstitutionKind,
        keys: Sequence[NewKey],
        contacts: Sequence[DutyContact],
        *,
        operator: str = "operator",
    ) -> Institution:
        now = self.clock.now()
        with self.uow() as uow:
            if uow.institutions.get(code) is not None:
                raise AlreadyExists(
                    "INSTITUTION_EXISTS", f"institution {code} is already registered"
                )
            if (kind is InstitutionKind.HUB) != (code == HUB_CODE):
                raise InvalidArgument("code", f"the hub is registered as {HUB_CODE}, and only it")
            inst = Institution.register(code, display_name, kind, now, list(contacts))
            for key in keys:
                self._add_key(inst, key, now)
            uow.institutions.add(inst)
            uow.audit.append(
                AuditEntry(
                    kind="admin",
                    actor=operator,
                    message_id="",
                    detail=f"registered {kind.value} {code} ({display_name}) with keys "
                    + ", ".join(k.key_id for k in inst.keys),
                ),
                now,
            )
            uow.commit()
            return inst

    @staticmethod
    def _add_key(inst: Institution, key: NewKey, now: object) -> str:
        if key.algorithm not in ALGORITHMS:
            raise InvalidArgument("algorithm", f"unknown algorithm {key.algorithm!r}")
        key_id = key_id_for(key.algorithm, key.public_key)
        inst.add_key(key_id, key.algorithm, key.public_key, now)  # type: ignore[arg-type]
        return key_id

    def add_key(self, code: str, key: NewKey, *, operator: str = "operator") -> str:
        now = self.clock.now()
        with self.uow() as uow:
            inst = self._get(uow, code)
            key_id = self._add_key(inst, key, now)
            uow.audit.append(
                AuditEntry("admin", operator, "", f"added key {key_id} to {code}"), now
            )
            uow.commit()
            return key_id

    def rotate_key(
        self, code: str, key: NewKey, overlap: timedelta, *, operator: str = "operator"
    ) -> tuple[str, list[str]]:
        """Register `key` and retire the institution's other keys once `overlap` has passed.

        During the overlap both sign (the institution switches its signers at its own pace);
        after it, the old keys are refused for new messages, and what they signed before
        still verifies. Returns the new key id and the ids being retired."""
        if key.algorithm not in ALGORITHMS:
            raise InvalidArgument("algorithm", f"unknown algorithm {key.algorithm!r}")
        now = self.clock.now()
        key_id = key_id_for(key.algorithm, key.public_key)
        with self.uow() as uow:
            inst = self._get(uow, code)
            retiring = inst.rotate_key(key_id, key.algorithm, key.public_key, now, overlap)
            until = (now + overlap).isoformat()
            uow.audit.append(
                AuditEntry(
                    "admin",
                    operator,
                    "",
                    f"rotated {code} to key {key_id}; "
                    + (", ".join(k.key_id for k in retiring) or "no other key")
                    + f" retired at {until}",
                ),
                now,
            )
            uow.commit()
            return key_id, [k.key_id for k in retiring]

    def revoke_key(self, code: str, key_id: str, *, operator: str = "operator") -> None:
        now = self.clock.now()
        with self.uow() as uow:
            inst = self._get(uow, code)
            inst.revoke_key(key_id, now)
            uow.audit.append(
                AuditEntry("admin", operator, "", f"revoked key {key_id} of {code}"), now
            )
            uow.commit()

    def get(self, code: str) -> Institution:
        with self.uow(read_only=True) as uow:
            return self._get(uow, code)

    def list(self) -> list[Institution]:
        with self.uow(read_only=True) as uow:
            result: list[Institution] = []
            after: str | None = None
            while True:
                page = uow.institutions.list(500, after)
                result.extend(page)
                if len(page) < 500:
                    return result
                after = page[-1].code

    @staticmethod
    def _get(uow: object, code: str) -> Institution:
        inst = uow.institutions.get(code)  # type: ignore[attr-defined]
        if inst is None:
            raise NotFound("INSTITUTION_NOT_FOUND", f"no institution {code!r}")
        assert isinstance(inst, Institution)
        return inst
