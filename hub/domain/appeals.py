"""Appeals (异议申诉): an account holder, through the institution that keeps the account,
contests a stop, a freeze or a listing; the centre decides before the appeal clock runs out.

Plain Python. What an upheld appeal releases and removes is the service's business; the
appeal records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from hub.domain.errors import FailedPrecondition, InvalidArgument

MAX_DOCUMENTS = 50
MAX_GROUNDS = 4000


class AppealState(StrEnum):
    FILED = "filed"
    UPHELD = "upheld"
    REJECTED = "rejected"


class ReferenceKind(StrEnum):
    STOP = "stop"
    FREEZE = "freeze"
    LISTING = "listing"


@dataclass(frozen=True)
class Document:
    name: str
    sha256: bytes


def validate_documents(documents: Sequence[Document]) -> None:
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidArgument("documents", f"at most {MAX_DOCUMENTS} documents an appeal")
    for i, doc in enumerate(documents):
        if len(doc.sha256) != 32:
            raise InvalidArgument(
                f"documents[{i}].sha256",
                f"must be the document's SHA-256, 32 bytes (got {len(doc.sha256)})",
            )
        if not doc.name.strip() or len(doc.name) > 200:
            raise InvalidArgument(f"documents[{i}].name", "name the document (1-200 characters)")


@dataclass(eq=False)
class Appeal:
    appeal_id: str
    reference: str
    reference_kind: ReferenceKind
    case_id: str
    appellant: str
    grounds: str
    documents: str  # "name:sha256hex" lines: documents are few and only ever shown whole
    filed_at: datetime
    decide_by: datetime
    message_id: str
    state: AppealState = AppealState.FILED
    decided_at: datetime | None = None
    decided_by: str = ""
    reason: str = ""
    release_orders: str = ""  # space-separated order ids
    removed_entries: str = ""  # space-separated list entry ids

    @staticmethod
    def file(
        appeal_id: str,
        reference: str,
        kind: ReferenceKind,
        case_id: str,
        appellant: str,
        grounds: str,
        documents: Sequence[Document],
        *,
        now: datetime,
        decide_by: datetime,
        message_id: str,
    ) -> Appeal:
        grounds = grounds.strip()
        if not grounds:
            raise InvalidArgument("grounds", "say why the stop, freeze or listing is wrong")
        if len(grounds) > MAX_GROUNDS:
            raise InvalidArgument("grounds", f"at most {MAX_GROUNDS} characters")
        validate_documents(documents)
        return Appeal(
            appeal_id,
            reference,
            kind,
            case_id,
            appellant,
            grounds,
            "\n".join(f"{d.name.strip()}:{d.sha256.hex()}" for d in documents),
            now,
            decide_by,
            message_id,
        )

    def document_list(self) -> list[Document]:
        out = []
        for line in self.documents.splitlines():
            name, _, digest = line.rpartition(":")
            out.append(Document(name, bytes.fromhex(digest)))
        return out

    def decide(
        self,
        uphold: bool,
        by: str,
        reason: str,
        now: datetime,
        *,
        released: Sequence[str] = (),
        removed: Sequence[str] = (),
    ) -> None:
        if self.state is not AppealState.FILED:
            raise FailedPrecondition(
                "APPEAL_DECIDED",
                f"appeal {self.appeal_id} was already {self.state.value} on "
                f"{self.decided_at.isoformat() if self.decided_at else '?'}",
            )
        reason = reason.strip()
        if not reason:
            raise InvalidArgument("reason", "give the reason: the appellant is told it")
        self.state = AppealState.UPHELD if uphold else AppealState.REJECTED
        self.decided_by = by
        self.decided_at = now
        self.reason = reason
        self.release_orders = " ".join(released)
        self.removed_entries = " ".join(removed)
