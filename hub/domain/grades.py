"""Three-colour grades (红/黄/绿, docs/grades.md) of cases and leads: set by the sender,
adjustable by the anti-fraud centre, the first key of every queue's order.

Plain Python.
"""

from __future__ import annotations

from enum import StrEnum


class Grade(StrEnum):
    # Stop, call the police, keep the evidence.
    RED = "red"
    # Suspend and refer to a supervisor.
    YELLOW = "yellow"
    # Resolved by more documents.
    GREEN = "green"
    UNGRADED = ""

    @property
    def rank(self) -> int:
        """Its place in a queue: red 0, yellow 1, green 2, ungraded 3."""
        return QUEUE_ORDER.index(self)

    @property
    def label(self) -> str:
        return self.value or "ungraded"


QUEUE_ORDER = (Grade.RED, Grade.YELLOW, Grade.GREEN, Grade.UNGRADED)


def grade_of(value: str | None) -> Grade:
    """A stored grade ('' or None: ungraded)."""
    return Grade(value or "")
