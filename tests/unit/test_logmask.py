"""Account numbers are masked in every log line: message, arguments and tracebacks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from hub.observability import logmask
from hub.observability.logmask import mask_accounts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hold in 6222020000001234 at BANKB", "hold in 6222********1234 at BANKB"),
        ("id 110101199003077777", "id 1101**********7777"),
        ("a/c 6222010000000001,6222020000000002.", "a/c 6222********0001,6222********0002."),
        ("phone 13800138000", "phone 1380***8000"),
        # Short numbers stay: amounts in fen, sequences, years, ports, timestamps' parts.
        ("held 500000000 fen, seq 42, 2026-03-02 port 7443", None),
        ("PX-0000000099", "PX-0000**0099"),
    ],
)
def test_mask_accounts(text: str, expected: str | None) -> None:
    assert mask_accounts(text) == (expected or text)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A root-like logger with one stream handler, masked as the CLI masks the root."""
    stream = io.StringIO()
    root = logging.getLogger("test-logmask-root")
    root.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logmask.install(root)
    logmask.install(root)  # idempotent
    assert sum(isinstance(f, logmask.AccountMask) for f in handler.filters) == 1
    try:
        yield root, stream
    finally:
        root.removeHandler(handler)


def test_records_of_child_loggers_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    root, stream = captured
    child = root.getChild("hub.api")
    child.info("stopped %s for %d fen (%s)", "6222020000001234", 500, {"acct": 6222020000005678})
    child.warning("no match on %s, %d%% sure", "6222020000009999", 100)
    child.error("account 6222020000008888 closed")
    try:
        raise ValueError("account 6222020000004321 is closed")
    except ValueError:
        child.exception("core bank failed on O-1")
    out = stream.getvalue()
    assert "6222********1234 for 500 fen ({'acct': 6222********5678})" in out
    assert "no match on 6222********9999, 100% sure" in out
    assert "account 6222********8888 closed" in out
    assert "ValueError: account 6222********4321 is closed" in out
    for full in ("0000001234", "0000005678", "0000009999", "0000008888", "0000004321"):
        assert full not in out
