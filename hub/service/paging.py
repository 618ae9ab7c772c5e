"""Pages of a listing: how many a page holds, and the opaque tokens that continue one."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from hub.domain.errors import InvalidArgument

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def decode_token(token: str) -> Any:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("page_token", "is not a token this hub issued") from exc


def encode_token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def decode_time_key(token: str) -> tuple[datetime, str] | None:
    """The (time, id) key a newest-first listing's token continues after; None for the first
    page."""
    value = decode_token(token)
    if value is None:
        return None
    try:
        return (datetime.fromisoformat(value[0]), str(value[1]))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise InvalidArgument("page_token", "is not a token this hub issued") from exc
