"""How money, account numbers and people are written wherever the hub writes for people:
timeline summaries, notices, refusals, and every rendering of them.

One place, so an amount reads the same in a notice and on a screen, and no account number
or name leaves in full where only those entitled should read it (docs/personal-data.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}¥{fen // 100:,}.{fen % 100:02d}"


def mask(account: str) -> str:
    """Account numbers in logs and messages show only their last four characters."""
    return "*" * max(len(account) - 4, 0) + account[-4:]


def mask_name(name: str) -> str:
    """A person's name shows only its first character (张三 as 张*, Li Si as L****)."""
    return name[:1] + "*" * max(len(name) - 1, 0)


def redact(text: str, names: Iterable[str]) -> str:
    """`text` (a timeline summary, a notice) with each of `names` masked wherever it stands;
    the longest first, so a name inside another is not half masked. Names shorter than two
    characters are left alone: masking one character would mask it in every word."""
    for name in sorted({n.strip() for n in names if len(n.strip()) >= 2}, key=len, reverse=True):
        text = text.replace(name, mask_name(name))
    return text


@dataclass(frozen=True)
class Disclosure:
    """What one output shows of the people in it: the policy of docs/personal-data.md.

    Masked (the default): a name as `mask_name`, an account number as `mask`, free text with
    every name in `names` masked (`redact`), ID numbers and phones not at all. With
    `personal_data` (the `--personal-data` switch, for those entitled) all of it in full.
    """

    personal_data: bool = False
    # The names free text may hold: Case.personal_names() of the cases the output shows.
    names: frozenset[str] = frozenset()

    def knowing(self, names: Iterable[str]) -> Disclosure:
        """The same policy, masking `names` too in free text."""
        return replace(self, names=self.names | frozenset(names))

    def name(self, name: str) -> str:
        return name if self.personal_data else mask_name(name)

    def account(self, number: str) -> str:
        return number if self.personal_data else mask(number)

    def subject(self, key: str) -> str:
        """An account as INSTITUTION/NUMBER (a list entry's subject, a trail's node id)."""
        institution, sep, number = key.rpartition("/")
        return f"{institution}{sep}{self.account(number)}"

    def text(self, text: str) -> str:
        return text if self.personal_data else redact(text, self.names)

    def private(self, value: str) -> str | None:
        """An ID number or a phone: itself with personal data; else None, shown nowhere."""
        return value if self.personal_data else None


MASKED = Disclosure()
