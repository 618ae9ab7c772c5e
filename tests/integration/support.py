"""Helpers shared by the integration tests."""

from __future__ import annotations

import pytest


def dialect_of(request: pytest.FixtureRequest) -> str:
    url = str(request.getfixturevalue("database_url"))
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def xfail_on(request: pytest.FixtureRequest, dialect: str, reason: str) -> None:
    """Mark the running test a strict xfail on one dialect only (it passes on the other)."""
    if dialect_of(request) == dialect:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
