"""How money and account numbers are written wherever the hub writes for people: timeline
summaries, notices, refusals, and every rendering of them.

One place, so an amount reads the same in a notice and on a screen, and no account number
leaves in full where only its owner's institution should read it.
"""

from __future__ import annotations

from collections.abc import Iterable


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
