"""Structured logs: `stophub --log-format json` writes one JSON object per line.

Each line has `time` (ISO 8601, UTC), `level`, `logger` and `message`, and, when the line was
written while the hub handled a request, `institution` (the envelope's sender), `message_id`
(its message id), `case_id` (the case its body names) and `rpc` (the gRPC method). The ids
are carried in a context variable that the edge sets once per request (the RPC interceptor
and `Runner.run`), never in the log calls; `Runner.call` copies the context into the worker
thread, so lines the handlers write there carry them too. The case id is read from the
request's body only when a line is actually written.

Account numbers stay masked (hub/logmask.py): the mask filter rewrites the message and the
traceback text, and the JSON formatter masks what it formats itself (tracebacks, stacks, and
extra string fields).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from pythonjsonlogger.json import JsonFormatter

from hub.observability.logmask import AccountMask, mask_accounts
from hub.observability.logmask import install as mask_accounts_in_logs

__all__ = [
    "FORMATS",
    "TEXT_FORMAT",
    "RequestContextFilter",
    "RequestIds",
    "StopHubJsonFormatter",
    "case_id_in",
    "configure",
    "current",
    "enter",
    "scope",
]

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENV_FORMAT = "STOPHUB_LOG_FORMAT"
# Set by `serve --workers N`'s parent for each worker (1 to N): its JSON lines say which.
ENV_WORKER = "STOPHUB_WORKER"
CONTEXT_FIELDS = ("case_id", "message_id", "institution", "rpc")
# Lines about a whole group commit are written by whichever request's thread leads it: they
# are about every request in the batch, so they carry none of that one's ids.
UNATTRIBUTED_LOGGERS = frozenset({"hub.service.batching"})


class RequestIds:
    """What the log knows about the request being handled. The case id may be given as a
    function (read lazily, once, when a line is written)."""

    __slots__ = ("_case", "_case_source", "institution", "message_id", "rpc")

    def __init__(
        self,
        *,
        institution: str | None = None,
        message_id: str | None = None,
        rpc: str | None = None,
        case_id: str | Callable[[], str | None] | None = None,
    ) -> None:
        self.institution = institution or None
        self.message_id = message_id or None
        self.rpc = rpc or None
        self._case: str | None = None
        self._case_source: Callable[[], str | None] | None = None
        self.case_id = case_id

    @property
    def case_id(self) -> str | None:
        if self._case_source is not None:
            source, self._case_source = self._case_source, None
            try:
                self._case = source() or None
            except Exception:  # a log line must never fail for its context
                self._case = None
        return self._case

    @case_id.setter
    def case_id(self, value: str | Callable[[], str | None] | None) -> None:
        if callable(value):
            self._case, self._case_source = None, value
        else:
            self._case, self._case_source = value or None, None

    def fields(self) -> dict[str, str]:
        found = {
            "case_id": self.case_id,
            "message_id": self.message_id,
            "institution": self.institution,
            "rpc": self.rpc,
        }
        return {k: v for k, v in found.items() if v}


_current: ContextVar[RequestIds | None] = ContextVar("stophub_request_ids", default=None)


def current() -> RequestIds | None:
    """The ids of the request this code runs for, if any."""
    return _current.get()


@contextlib.contextmanager
def scope(
    *,
    institution: str | None = None,
    message_id: str | None = None,
    rpc: str | None = None,
    case_id: str | Callable[[], str | None] | None = None,
) -> Iterator[RequestIds]:
    """Ids for the lines written inside the block (and in worker threads it hands work to
    with a copied context); fields not given are kept from the enclosing scope."""
    outer = _current.get()
    ids = RequestIds(
        institution=institution or (outer.institution if outer else None),
        message_id=message_id or (outer.message_id if outer else None),
        rpc=rpc or (outer.rpc if outer else None),
        case_id=case_id if case_id is not None else (outer.case_id if outer else None),
    )
    token = _current.set(ids)
    try:
        yield ids
    finally:
        _current.reset(token)


def enter(
    *,
    institution: str | None = None,
    message_id: str | None = None,
    rpc: str | None = None,
) -> RequestIds:
    """`scope` without an end, for code whose context ends with the request (a gRPC call's
    own task)."""
    outer = _current.get()
    ids = RequestIds(
        institution=institution or (outer.institution if outer else None),
        message_id=message_id or (outer.message_id if outer else None),
        rpc=rpc or (outer.rpc if outer else None),
    )
    _current.set(ids)
    return ids


def case_id_in(body: bytes, body_type: str | type[Message]) -> str | None:
    """The `case_id` (or `source_case_id`) a serialized message names at its top level."""
    if isinstance(body_type, str):
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(body_type)
        except KeyError:
            return None
        cls: type[Message] = message_factory.GetMessageClass(descriptor)
    else:
        cls = body_type
    fields = cls.DESCRIPTOR.fields_by_name
    name = next((n for n in ("case_id", "source_case_id") if n in fields), None)
    if name is None:
        return None
    try:
        message = cls.FromString(body)
    except DecodeError:
        return None
    value = getattr(message, name)
    if not isinstance(value, str):
        return None
    return value.strip() or None


class RequestContextFilter(logging.Filter):
    """Adds the current request's ids to each record (ids given with `extra=` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current.get()
        if ids is None or record.name in UNATTRIBUTED_LOGGERS:
            return True
        for key, value in ids.fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_KEEP = frozenset({"time", "level", "logger", *CONTEXT_FIELDS})


class StopHubJsonFormatter(JsonFormatter):
    """python-json-logger with StopHub's field names, UTC times, and account masking of
    everything it formats itself."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__(
            ("asctime", "levelname", "name", "message"),
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={} if worker is None else {"worker": worker},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # The record's own creation time (the logging module's), not a clock read here.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return mask_accounts(logging.Formatter.formatException(self, ei))

    def formatStack(self, stack_info: str) -> str:
        return mask_accounts(stack_info)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key, value in log_data.items():
            if key not in _KEEP and isinstance(value, str):
                log_data[key] = mask_accounts(value)
        return log_data


def json_handler(stream: Any = None, worker: int | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(StopHubJsonFormatter(worker))
    handler.addFilter(AccountMask())
    handler.addFilter(RequestContextFilter())
    return handler


def configure(
    level: str | int = "WARNING", fmt: LogFormat = "text", worker: int | None = None
) -> None:
    """The process's logging: text (the historical format) or JSON lines, on stderr, each
    with `worker` when `worker` is given (a worker of `serve --workers`). Like
    `logging.basicConfig`, it leaves a root logger that already has handlers alone (a test
    runner's), apart from adding the account mask to them."""
    root = logging.getLogger()
    if isinstance(level, str):
        level = level.upper()
    if fmt == "json":
        if not root.handlers:
            root.addHandler(json_handler(worker=worker))
            root.setLevel(level)
            # Python's warnings too, or they would be the one kind of line that is not JSON.
            logging.captureWarnings(True)
    elif fmt == "text":
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    else:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(FORMATS)}")
    mask_accounts_in_logs()
