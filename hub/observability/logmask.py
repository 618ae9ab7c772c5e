"""Account numbers never reach a log in full: they keep their first and last four digits.

What is an account number in a log line, and what only has digits like one:

- An account number, a bank card, a phone or a resident ID number is a run of ten digits or
  more that stands as a word of its own: between spaces, punctuation or Chinese text, after
  an institution's or a wallet's capitals ("PX88000000123", "BANKB-6222…", "PX-0000000099")
  or a country code ("+86-138…"), before an ID number's check X. A card may be written in
  groups of four ("6222 0200 0000 1234").
- An id the hub or a member made up joins letters and digits into one word with `-` or `_`:
  a message id ("banka-5915e8ce058d…", its hex may hold thirteen digits in a row), a case,
  order or list entry ("C20261204-3F2A9C1B-O004", "L20261204-…"), a clock id ("K3F2A…"), a
  key id or a digest in lowercase hex. Such a word is left whole, whatever digits it holds.
- A time: ISO ("2026-12-04T17:48:08.699974"), compact ("20261204174808"), or seconds with a
  fraction ("1733330000.25"). Left whole.

A hex id made only of decimal digits and standing alone cannot be told from an account
number; it is masked, and so is a clock id whose hex is capitals then ten digits or more
("KA0000000000000000000" reads as a wallet's account). Shorter runs (amounts in fen,
sequence numbers, ports) stay readable.

Installed on the root logger's handlers (a filter on a logger would miss records that its
child loggers propagate), by the CLI's logging setup and by `bootstrap.serve`.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

# A word: ASCII letters and digits, joined by "-" or "_" into one id. A Chinese character
# beside a number is no part of it.
_WORD = re.compile(r"[0-9A-Za-z]+(?:[-_][0-9A-Za-z]+)*")
_JOINS = re.compile(r"([-_])")
# One part of a word that is an account number: capitals before it, an ID number's X after.
_ACCOUNT = re.compile(r"([A-Z]*)([0-9]{10,})([Xx]?)")
# What may stand in the same word beside an account number: an institution's or a wallet's
# capitals, a country or area code.
_BESIDE = re.compile(r"[A-Z]+|[0-9]{1,4}")
# A card in groups of four digits: four groups, and the last digits of a longer card.
_GROUPED = re.compile(
    r"(?<![0-9A-Za-z.])[0-9]{4}(?:[ -][0-9]{4}){3}(?:[ -][0-9]{1,3})?(?![0-9A-Za-z])"
)
_LONG_RUN = re.compile(r"[0-9]{10}")
_DIGITS = frozenset("0123456789")


def mask_accounts(text: str) -> str:
    """'6222020000001234' -> '6222********1234'; ids and times stay as they are."""
    text = _GROUPED.sub(_mask_grouped, text)
    if _LONG_RUN.search(text) is None:
        return text  # most lines: no word to look at
    return _WORD.sub(lambda m: _mask_word(m, text), text)


def _hide(digits: str) -> str:
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


def _mask_grouped(match: re.Match[str]) -> str:
    card = match[0]
    positions = [i for i, c in enumerate(card) if c in _DIGITS]
    hidden = set(positions[4:-4])
    return "".join("*" if i in hidden else c for i, c in enumerate(card))


def _mask_word(match: re.Match[str], text: str) -> str:
    word = match[0]
    start, end = match.span()
    # Seconds with a fraction, or the fraction itself: a number, not an account.
    if text[end : end + 1] == "." and text[end + 1 : end + 2] in _DIGITS:
        return word
    if text[start - 1 : start] == "." and start >= 2 and text[start - 2] in _DIGITS:
        return word
    parts = _JOINS.split(word)
    found = False
    for part in parts[::2]:
        account = _ACCOUNT.fullmatch(part)
        if account is not None and not _compact_time(account[2]):
            found = True
        elif not _BESIDE.fullmatch(part):
            return word  # an id: letters and digits mixed, or a lowercase word
    if not found:
        return word
    for i in range(0, len(parts), 2):
        account = _ACCOUNT.fullmatch(parts[i])
        if account is not None:
            parts[i] = account[1] + _hide(account[2]) + account[3]
    return "".join(parts)


def _compact_time(digits: str) -> bool:
    """20261204174808: a time to the second, written without separators."""
    if len(digits) != 14:
        return False
    try:
        year = datetime.strptime(digits + "Z", "%Y%m%d%H%M%S%z").year
    except ValueError:
        return False
    return 1970 <= year <= 2099


class AccountMask(logging.Filter):
    """Rewrites each record's message, arguments merged in, and its traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_accounts(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_accounts(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_accounts(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the mask to every handler of `logger` (the root logger) that lacks it, and to the
    handler Python falls back on when logging was never configured."""
    target = logger or logging.getLogger()
    handlers = list(target.handlers)
    if logger is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, AccountMask) for f in handler.filters):
            handler.addFilter(AccountMask())
