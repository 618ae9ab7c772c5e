"""Account numbers never reach a log in full: long digit runs keep their first and last four.

Installed on the root logger's handlers (a filter on a logger would miss records that its
child loggers propagate), by the CLI's logging setup and by `bootstrap.serve`.
"""

from __future__ import annotations

import logging
import re

# Ten digits or more: bank cards (16-19), account numbers, and ID numbers and phones with
# them; shorter runs (amounts in fen, sequence numbers, ports, years) stay readable.
_LONG_DIGITS = re.compile(r"(?<![0-9])([0-9]{4})([0-9]{2,})([0-9]{4})(?![0-9])")


def mask_accounts(text: str) -> str:
    """'6222020000001234' -> '6222********1234'."""
    return _LONG_DIGITS.sub(lambda m: m[1] + "*" * len(m[2]) + m[3], text)


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
