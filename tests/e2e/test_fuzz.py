"""Hostile input: property-based and mutation fuzzing of every RPC against a real hub.

Layers, each with many hypothesis examples, over every unary RPC and the delivery stream:

  a. raw random bytes as the serialized request, and requests whose envelope is hand-encoded
     at the wire level (invalid UTF-8 in strings, wrong wire types, unknown fields);
  b. structurally valid envelopes with garbled header fields (empty, huge, unicode, control
     characters, wrong body_type, extreme timestamps, negative nanos, unknown key ids);
  c. correctly SIGNED envelopes, so the request reaches the body decoding and the domain
     rules: garbled but signed headers; bodies with hypothesis values in their fields (amounts,
     accounts, times, enums out of range, NUL/emoji/10k-character strings, repeated fields
     with up to 10k entries); bit-flipped, truncated and spliced bodies; and valid signed
     requests with one byte flipped after signing;
  d. the delivery stream: garbage frames, garbled subscriptions and acknowledgements.

Every answer must be OK or a clean refusal (never UNKNOWN or INTERNAL) with a message and a
google.rpc.Status carrying an ErrorInfo reason (gRPC's own transport refusals excepted); no
hub logger may log an exception; afterwards the hub still answers a health check and takes
a valid report.

How hypothesis meets the async fixture: `network`, and the channels `network.channel(code)`
opens, live on the test's event loop, which also runs the hub (it is in-process). Each layer's
@given function runs in a worker thread (asyncio.to_thread) and hands each request to the loop
with run_coroutine_threadsafe, blocking on the answer; examples stay sequential, assertions
run in the thread, and a failing example shrinks as usual. derandomize=True makes every run
generate the same examples, deadline=None leaves latency to the call timeout (a hang fails
as DEADLINE_EXCEEDED, which is not a clean status), database=None keeps CI stateless.

Run longer with STOPHUB_FUZZ_EXAMPLES=N (N examples per layer; see DEVELOPERS.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey
from hub.crypto.signing import Header, signing_input
from hub.system.clock import ManualClock
from stophub.v1 import (
    appeal_pb2,
    audit_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    institution_pb2,
    lead_pb2,
    order_pb2,
    outcome_pb2,
    returns_pb2,
    sla_pb2,
    trail_pb2,
    warning_pb2,
)
from tests.e2e.conftest import Network, start_network
from tests.e2e.wire_helpers import MULE, VICTIM, report

T = TypeVar("T")

EXAMPLES = int(os.environ.get("STOPHUB_FUZZ_EXAMPLES", "0"))
CALL_TIMEOUT = 15.0
CLEAN = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# Refused by gRPC itself (message size) before the hub sees a byte: no hub ErrorInfo.
TRANSPORT = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_MESSAGE = 8 * 1024 * 1024  # the server's grpc.max_receive_message_length
STREAM = "/stophub.v1.DeliveryService/StreamDeliveries"
SYNC_LIST = "/stophub.v1.ListService/SyncList"


@dataclass(frozen=True)
class Rpc:
    path: str
    body: type[Message]
    sender: str  # a member allowed to call it, so refusals come from the rules, not the kind


RPCS = {
    "CreateReport": Rpc("/stophub.v1.CaseService/CreateReport", case_pb2.Report, "BANKA"),
    "VerifyReport": Rpc("/stophub.v1.CaseService/VerifyReport", case_pb2.Verification, "BANKA"),
    "GetCase": Rpc("/stophub.v1.CaseService/GetCase", case_pb2.GetCaseBody, "BANKB"),
    "ListCases": Rpc("/stophub.v1.CaseService/ListCases", case_pb2.ListCasesBody, "CENTRE"),
    "IssueOrder": Rpc("/stophub.v1.OrderService/IssueOrder", order_pb2.OrderInstruction, "CENTRE"),
    "AnswerOrder": Rpc("/stophub.v1.OrderService/AnswerOrder", order_pb2.ExecutionResult, "BANKB"),
    "SetAutoStopRule": Rpc(
        "/stophub.v1.OrderService/SetAutoStopRule", order_pb2.AutoStopRule, "CENTRE"
    ),
    "GetInstitution": Rpc(
        "/stophub.v1.InstitutionService/GetInstitution",
        institution_pb2.GetInstitutionBody,
        "PAYX",
    ),
    "ListInstitutions": Rpc(
        "/stophub.v1.InstitutionService/ListInstitutions",
        institution_pb2.ListInstitutionsBody,
        "REG",
    ),
    "ListClocks": Rpc("/stophub.v1.SlaService/ListClocks", sla_pb2.ListClocksBody, "BANKB"),
    "AcknowledgeBreach": Rpc(
        "/stophub.v1.SlaService/AcknowledgeBreach", sla_pb2.BreachAcknowledgement, "CENTRE"
    ),
    "GetCaseTrail": Rpc(
        "/stophub.v1.CaseService/GetCaseTrail", trail_pb2.GetCaseTrailBody, "CENTRE"
    ),
    "StartDistribution": Rpc(
        "/stophub.v1.DistributionService/StartDistribution",
        returns_pb2.StartDistributionBody,
        "CENTRE",
    ),
    "ObjectToDistribution": Rpc(
        "/stophub.v1.DistributionService/ObjectToDistribution", returns_pb2.ObjectionBody, "BANKB"
    ),
    "DecideDistribution": Rpc(
        "/stophub.v1.DistributionService/DecideDistribution",
        returns_pb2.DistributionDecisionBody,
        "CENTRE",
    ),
    "GetDistribution": Rpc(
        "/stophub.v1.DistributionService/GetDistribution", returns_pb2.GetDistributionBody, "REG"
    ),
    "PublishListEntry": Rpc(
        "/stophub.v1.ListService/PublishListEntry", blacklist_pb2.PublishListEntryBody, "CENTRE"
    ),
    "RemoveListEntry": Rpc(
        "/stophub.v1.ListService/RemoveListEntry", blacklist_pb2.RemoveListEntryBody, "CENTRE"
    ),
    "CheckList": Rpc("/stophub.v1.ListService/CheckList", blacklist_pb2.CheckListBody, "PAYX"),
    "SyncList": Rpc(SYNC_LIST, blacklist_pb2.SyncListBody, "PAYX"),
    "FileAppeal": Rpc("/stophub.v1.AppealService/FileAppeal", appeal_pb2.FileAppealBody, "BANKB"),
    "DecideAppeal": Rpc(
        "/stophub.v1.AppealService/DecideAppeal", appeal_pb2.DecideAppealBody, "CENTRE"
    ),
    "GetAppeal": Rpc("/stophub.v1.AppealService/GetAppeal", appeal_pb2.GetAppealBody, "BANKB"),
    "ListAppeals": Rpc(
        "/stophub.v1.AppealService/ListAppeals", appeal_pb2.ListAppealsBody, "BANKB"
    ),
    "SetCaseGrade": Rpc(
        "/stophub.v1.CaseService/SetCaseGrade", case_pb2.SetCaseGradeBody, "CENTRE"
    ),
    "SubmitLead": Rpc("/stophub.v1.LeadService/SubmitLead", lead_pb2.SubmitLeadBody, "BANKA"),
    "TriageLead": Rpc("/stophub.v1.LeadService/TriageLead", lead_pb2.TriageLeadBody, "CENTRE"),
    "AddLeadInformation": Rpc(
        "/stophub.v1.LeadService/AddLeadInformation", lead_pb2.AddLeadInformationBody, "BANKA"
    ),
    "SetLeadGrade": Rpc(
        "/stophub.v1.LeadService/SetLeadGrade", lead_pb2.SetLeadGradeBody, "CENTRE"
    ),
    "GetLead": Rpc("/stophub.v1.LeadService/GetLead", lead_pb2.GetLeadBody, "PAYX"),
    "ListLeads": Rpc("/stophub.v1.LeadService/ListLeads", lead_pb2.ListLeadsBody, "BANKA"),
    "ListAuditEntries": Rpc(
        "/stophub.v1.AuditService/ListAuditEntries", audit_pb2.ListAuditEntriesBody, "REG"
    ),
    "GetLogCheckpoint": Rpc(
        "/stophub.v1.AuditService/GetLogCheckpoint", audit_pb2.GetLogCheckpointBody, "REG"
    ),
    "GetInclusionProof": Rpc(
        "/stophub.v1.AuditService/GetInclusionProof", audit_pb2.GetInclusionProofBody, "REG"
    ),
    "GetConsistencyProof": Rpc(
        "/stophub.v1.AuditService/GetConsistencyProof", audit_pb2.GetConsistencyProofBody, "REG"
    ),
    "GetOutcomeFigures": Rpc(
        "/stophub.v1.OutcomeService/GetOutcomeFigures", outcome_pb2.OutcomeQuery, "REG"
    ),
    "SendWarning": Rpc(
        "/stophub.v1.WarningService/SendWarning", warning_pb2.SendWarningBody, "CENTRE"
    ),
    "AcknowledgeWarning": Rpc(
        "/stophub.v1.WarningService/AcknowledgeWarning",
        warning_pb2.AcknowledgeWarningBody,
        "BANKB",
    ),
    "ReportWarningOutcome": Rpc(
        "/stophub.v1.WarningService/ReportWarningOutcome",
        warning_pb2.ReportWarningOutcomeBody,
        "BANKB",
    ),
    "GetWarning": Rpc("/stophub.v1.WarningService/GetWarning", warning_pb2.GetWarningBody, "PAYX"),
    "ListWarnings": Rpc(
        "/stophub.v1.WarningService/ListWarnings", warning_pb2.ListWarningsBody, "BANKB"
    ),
    "SetWarningGrade": Rpc(
        "/stophub.v1.WarningService/SetWarningGrade", warning_pb2.SetWarningGradeBody, "CENTRE"
    ),
}
BODY_TYPES = [r.body.DESCRIPTOR.full_name for r in RPCS.values()] + [
    delivery_pb2.SubscribeBody.DESCRIPTOR.full_name,
    delivery_pb2.AckBody.DESCRIPTOR.full_name,
]
CODES = ["BANKA", "BANKB", "CENTRE", "PAYX", "REG", "HUB"]

# ---- value strategies ------------------------------------------------------------------------

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
# Seconds at and just past the edges of what datetime (years 1..9999) and the hub's clocks hold.
EDGE_SECONDS = [
    INT64[0],
    INT64[1],
    -62_135_596_801,
    -62_135_596_800,
    253_402_300_799,
    253_402_300_800,
    0,
    -1,
]
odd_text = st.one_of(
    st.sampled_from(
        ["", " ", "\x00", "A\x00B", "\t\n\r", "A" * 10_000, "😀" * 2_500, "\u202e\ufeff", "é"]
    ),
    st.sampled_from([*CODES, *BODY_TYPES, "ed25519", "ecdsa-p256-sha256", MULE.account_number]),
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "So", "Lo"]), max_size=300),
)


def ints(lo: int, hi: int, extra: tuple[int, ...] = ()) -> st.SearchStrategy[int]:
    edges = [v for v in (lo, hi, 0, 1, -1, 10**14, 10**14 + 1, *extra) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def seconds_near(now_seconds: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(EDGE_SECONDS),
        st.integers(now_seconds - 400, now_seconds + 100),
        st.integers(*INT64),
    )


# ---- protobuf plumbing -----------------------------------------------------------------------

FieldPath = tuple[str, ...]


def scalar_paths(desc: d.Descriptor, depth: int = 0) -> list[FieldPath]:
    """Every scalar field reachable from `desc`, through sub-messages (first entry of lists)."""
    paths: list[FieldPath] = []
    for f in desc.fields:
        if f.type == d.FieldDescriptor.TYPE_MESSAGE:
            if depth < 4:
                paths += [(f.name, *p) for p in scalar_paths(f.message_type, depth + 1)]
        else:
            paths.append((f.name,))
    return paths


def repeated_paths(desc: d.Descriptor, depth: int = 0) -> list[FieldPath]:
    paths: list[FieldPath] = []
    for f in desc.fields:
        if _is_repeated(f):
            paths.append((f.name,))
        if f.type == d.FieldDescriptor.TYPE_MESSAGE and depth < 3:
            paths += [(f.name, *p) for p in repeated_paths(f.message_type, depth + 1)]
    return paths


def _is_repeated(f: d.FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _parent(msg: Message, path: FieldPath) -> tuple[Message, d.FieldDescriptor]:
    for name in path[:-1]:
        f = msg.DESCRIPTOR.fields_by_name[name]
        if _is_repeated(f):
            items = getattr(msg, name)
            msg = items[0] if len(items) else items.add()
        else:
            msg = getattr(msg, name)
    return msg, msg.DESCRIPTOR.fields_by_name[path[-1]]


def field_at(desc: d.Descriptor, path: FieldPath) -> d.FieldDescriptor:
    for name in path[:-1]:
        desc = desc.fields_by_name[name].message_type
    return desc.fields_by_name[path[-1]]


def set_path(msg: Message, path: FieldPath, value: Any) -> None:
    parent, f = _parent(msg, path)
    if _is_repeated(f):
        getattr(parent, f.name).append(value)
    else:
        setattr(parent, f.name, value)


def blow_up(msg: Message, path: FieldPath, count: int) -> None:
    """Repeat the first entry of the list at `path` until it has `count` entries."""
    parent, f = _parent(msg, path)
    items = getattr(parent, f.name)
    if f.type == d.FieldDescriptor.TYPE_MESSAGE:
        first = items[0] if len(items) else items.add()
        data = first.SerializeToString()
        for _ in range(count - len(items)):
            items.add().ParseFromString(data)
    else:
        seed = items[0] if len(items) else 1
        items.extend([seed] * (count - len(items)))


def values_for(f: d.FieldDescriptor, now_seconds: int) -> st.SearchStrategy[Any]:
    t = d.FieldDescriptor
    if f.type == t.TYPE_STRING:
        return odd_text
    if f.type == t.TYPE_BYTES:
        return st.binary(max_size=64)
    if f.type == t.TYPE_BOOL:
        return st.booleans()
    if f.type == t.TYPE_ENUM:
        return ints(*INT32, extra=tuple(range(2, 12)))
    if f.name == "seconds":
        return seconds_near(now_seconds)
    if f.name == "nanos":
        return ints(*INT32, extra=(999_999_999, 1_000_000_000))
    if f.type in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return ints(*INT32)
    if f.type in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return ints(0, 2**32 - 1)
    if f.type in (t.TYPE_UINT64, t.TYPE_FIXED64):
        return ints(0, 2**64 - 1)
    return ints(*INT64, extra=(2, 3, 999, 5_000_000))


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def wire_field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + varint(int.from_bytes(payload[:10] or b"\0", "little"))
    if wire_type == 1:
        return key + payload[:8].ljust(8, b"\0")
    if wire_type == 5:
        return key + payload[:4].ljust(4, b"\0")
    return key + varint(len(payload)) + payload


wire_fields = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from([0, 1, 2, 2, 2, 5]), st.binary(max_size=80)),
    max_size=12,
).map(lambda fs: b"".join(wire_field(*f) for f in fs))


def mutate_bytes(data: bytes, how: str, at: int, extra: bytes) -> bytes:
    if not data:
        return extra
    i = at % len(data)
    if how == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (at % 8))]) + data[i + 1 :]
    if how == "xor":
        return data[:i] + bytes([data[i] ^ (extra[0] if extra else 0xFF) or 1]) + data[i + 1 :]
    if how == "truncate":
        return data[:i]
    if how == "insert":
        return data[:i] + extra + data[i:]
    return data[:i] + data[i:] * 2  # repeat the tail: duplicated fields, broken lengths


byte_mutations = st.tuples(
    st.sampled_from(["flip", "xor", "truncate", "insert", "repeat"]),
    st.integers(0, 2**20),
    st.binary(min_size=1, max_size=16),
)


def fuzz_settings(fz: Fuzz, default: int) -> Callable[[T], T]:
    return settings(
        max_examples=EXAMPLES or max(1, int(default * fz.scale)),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


# ---- the harness -----------------------------------------------------------------------------


class Refusal(AssertionError):
    pass


@dataclass
class Fuzz:
    """Sends bytes to the hub from hypothesis's thread and checks every answer."""

    network: Network
    loop: asyncio.AbstractEventLoop
    scale: float = 1.0  # of each layer's examples
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    ids: Iterator[int] = field(default_factory=itertools.count)
    cases: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def channel(self, code: str) -> grpc.aio.Channel:
        if code not in self.channels:
            self.channels[code] = self.network.channel(code)
        return self.channels[code]

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT * 4)

    # ---- signing ------------------------------------------------------------------------------

    def message_id(self) -> str:
        return f"fz-{next(self.ids)}"

    def key(self, code: str) -> PrivateKey:
        return self.network.keys[code]

    def signed(
        self,
        code: str,
        body_type: str,
        body: bytes,
        *,
        sender: str | None = None,
        recipient: str = "HUB",
        message_id: str | None = None,
        seconds: int | None = None,
        nanos: int | None = None,
    ) -> envelope_pb2.Envelope:
        """An envelope signed with `code`'s real key, whatever odd values its header holds."""
        key = self.key(code)
        now = self.network.clock.now()
        header = Header(
            algorithm=key.algorithm,
            key_id=key.key_id,
            sender=code if sender is None else sender,
            recipient=recipient,
            message_id=self.message_id() if message_id is None else message_id,
            create_seconds=int(now.timestamp()) if seconds is None else seconds,
            create_nanos=now.microsecond * 1000 if nanos is None else nanos,
            body_type=body_type,
        )
        env = envelope_pb2.Envelope(
            sender=header.sender,
            recipient=header.recipient,
            message_id=header.message_id,
            body_type=header.body_type,
            body=body,
            key_id=header.key_id,
            algorithm=header.algorithm,
            signature=key.sign(signing_input(header, body)),
        )
        env.create_time.seconds = header.create_seconds
        env.create_time.nanos = header.create_nanos
        return env

    def sign_body(self, rpc: Rpc, body: Message) -> envelope_pb2.Envelope:
        return self.signed(rpc.sender, body.DESCRIPTOR.full_name, body.SerializeToString())

    @staticmethod
    def request(env: envelope_pb2.Envelope) -> bytes:
        # Every request message is `{Envelope envelope = 1}`.
        return case_pb2.CreateReportRequest(envelope=env).SerializeToString()

    # ---- calls (from the hypothesis thread) ---------------------------------------------------

    def unary(self, rpc: Rpc, data: bytes, code: str | None = None) -> Message | None:
        """Send `data` as the request and check the answer: None for a (clean) refusal, else
        the decoded Case or Order for reports and orders, the hub's envelope for the rest."""
        result = self._run(self._unary(rpc.path, data, code or rpc.sender))
        if isinstance(result, grpc.aio.AioRpcError):
            self.check_refusal(result, rpc.path)
            return None
        if rpc.path == SYNC_LIST:
            return None  # read to its first checkpoint by _unary
        return self._harvest(rpc, result)

    def stream(self, messages: list[bytes], code: str) -> None:
        err = self._run(self._stream(messages, code))
        if err is not None:
            self.check_refusal(err, STREAM)

    async def _unary(self, path: str, data: bytes, code: str) -> bytes | grpc.aio.AioRpcError:
        if path == SYNC_LIST:
            return await self._sync(data, code)
        call = self.channel(code).unary_unary(path)
        try:
            answer: bytes = await call(data, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            self.statuses[err.code().name] += 1
            return err
        self.statuses["OK"] += 1
        return answer

    async def _sync(self, data: bytes, code: str) -> bytes | grpc.aio.AioRpcError:
        """SyncList, read up to its first checkpoint (a following stream never ends)."""
        call = self.channel(code).unary_stream(SYNC_LIST)(data, timeout=CALL_TIMEOUT)
        try:
            while (part := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                if blacklist_pb2.SyncListResponse.FromString(part).HasField("checkpoint"):
                    break
        except grpc.aio.AioRpcError as err:
            self.statuses[err.code().name] += 1
            return err
        finally:
            call.cancel()
        self.statuses["OK"] += 1
        return b""

    async def _stream(self, messages: list[bytes], code: str) -> grpc.aio.AioRpcError | None:
        call = self.channel(code).stream_stream(STREAM)(timeout=CALL_TIMEOUT)
        write_failed = False
        try:
            await call.write(messages[0])
            # A refused subscription ends the call with its initial metadata; writing on
            # after that only races the hub's status (see below).
            await call.initial_metadata()
            for message in messages[1:]:
                if call.done():
                    break
                await call.write(message)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            write_failed = True  # the hub ended the stream early; its status is read below
        try:
            while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
                pass
        except grpc.aio.AioRpcError as err:
            if write_failed and err.details() == "Internal error from Core":
                # grpc/grpc#36066: an aio client's write that fails because the server has
                # already ended the RPC replaces the server's status with this one, locally.
                self.statuses["CLIENT_WRITE_RACE"] += 1
                return None
            self.statuses[err.code().name] += 1
            return err
        self.statuses["OK"] += 1
        return None

    def check_refusal(self, err: grpc.aio.AioRpcError, path: str) -> None:
        code = err.code()
        if code not in CLEAN:
            raise Refusal(f"{path} answered {code.name}: {err.details()!r}")
        if not err.details():
            raise Refusal(f"{path} refused with {code.name} and no message")
        if code in TRANSPORT:
            return
        status = rpc_status.from_call(err)
        if status is None:
            raise Refusal(f"{path} refused with {code.name} but no google.rpc.Status")
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if not info.reason:
                    raise Refusal(f"{path}: ErrorInfo without a reason for {err.details()!r}")
                self.reasons[info.reason] += 1
                return
        raise Refusal(f"{path} refused with {code.name} but no ErrorInfo: {err.details()!r}")

    def _harvest(self, rpc: Rpc, raw: bytes) -> Message:
        """New case and order ids join the pools that later examples draw from."""
        env = case_pb2.CreateReportResponse.FromString(raw).envelope
        assert verify_envelope(env, self.network.hub_public_key), "answers are hub-signed"
        if rpc.body is order_pb2.OrderInstruction:
            order = order_pb2.Order.FromString(env.body)
            self.orders.append(order.order_id)
            return order
        if rpc.body is case_pb2.Report:
            case = case_pb2.Case.FromString(env.body)
            self.cases.append(case.case_id)
            return case
        if rpc.body is lead_pb2.SubmitLeadBody:
            lead = lead_pb2.Lead.FromString(env.body)
            self.leads.append(lead.name)
            return lead
        if rpc.body is lead_pb2.TriageLeadBody:
            triaged = lead_pb2.Lead.FromString(env.body)
            if triaged.warning_id:
                # A lead accepted by a warning: the warning joins the pool to acknowledge.
                self.warnings.append(triaged.warning_id)
            return triaged
        if rpc.body is warning_pb2.SendWarningBody:
            warning = warning_pb2.Warning.FromString(env.body)
            self.warnings.append(warning.warning_id)
            return warning
        return env

    # ---- valid bodies, the starting points of mutation ----------------------------------------

    def pick(self, pool: list[str], index: int) -> str:
        return pool[index % len(pool)] if pool else "C-NONE"

    def template(self, name: str, variant: int) -> Message:
        now = self.network.clock.now()
        if name == "CreateReport":
            return report(now, (3_000_000, 2_000_000)[: 1 + variant % 2])
        if name == "VerifyReport":
            outcome = case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            return case_pb2.Verification(case_id=self.pick(self.cases, variant), outcome=outcome)
        if name == "GetCase":
            return case_pb2.GetCaseBody(case_id=self.pick(self.verified, variant))
        if name == "ListCases":
            return case_pb2.ListCasesBody(page_size=2, state=variant % 5)
        if name == "IssueOrder":
            return self.instruction(variant, now)
        if name == "AnswerOrder":
            result = order_pb2.ExecutionResult(
                order_id=self.pick(self.orders, variant),
                status=order_pb2.EXECUTION_STATUS_EXECUTED,
                amount_held_fen=5_000_000,
                available_balance_fen=0,
            )
            result.execute_time.FromDatetime(now)
            t = result.onward_transfers.add(amount_fen=1_000, to_account=VICTIM)
            t.transfer_time.FromDatetime(now - timedelta(minutes=1))
            return result
        if name == "SetAutoStopRule":
            return order_pb2.AutoStopRule(rule_id="r1", enabled=True, max_amount_fen=1_000_000)
        if name == "GetInstitution":
            return institution_pb2.GetInstitutionBody(code=CODES[variant % len(CODES)])
        if name == "ListInstitutions":
            return institution_pb2.ListInstitutionsBody(page_size=2)
        if name == "GetCaseTrail":
            return trail_pb2.GetCaseTrailBody(case_id=self.pick(self.verified, variant))
        if name == "StartDistribution":
            return returns_pb2.StartDistributionBody(
                case_id=self.pick(self.verified, variant),
                account=MULE,
                traced=[returns_pb2.TracedAmount(case_id="C-1", amount_fen=1, evidence="fz")]
                if variant % 2
                else [],
            )
        # No distribution is ever started in this world: these are refused as unknown, after
        # every check that comes before the lookup.
        if name == "ObjectToDistribution":
            return returns_pb2.ObjectionBody(distribution_id=f"D-{variant}", grounds="fz")
        if name == "DecideDistribution":
            return returns_pb2.DistributionDecisionBody(
                distribution_id=f"D-{variant}", decision=variant % 3, reason="fz"
            )
        if name == "GetDistribution":
            return returns_pb2.GetDistributionBody(distribution_id=f"D-{variant}")
        if name == "PublishListEntry":
            body = blacklist_pb2.PublishListEntryBody(
                basis=1 + variant % 2, reason="fz", source_case_id=self.pick(self.cases, variant)
            )
            if variant % 2:
                body.person.CopyFrom(
                    blacklist_pb2.ListedPerson(id_number=f"1101051949123{variant:05d}", name="fz")
                )
            else:
                body.account.CopyFrom(MULE)
            return body
        if name == "RemoveListEntry":
            return blacklist_pb2.RemoveListEntryBody(entry_id=f"L-{variant}", reason="fz")
        if name == "CheckList":
            return blacklist_pb2.CheckListBody(
                subjects=[
                    blacklist_pb2.ListSubject(account=MULE),
                    blacklist_pb2.ListSubject(id_number="11010519491231002X"),
                    blacklist_pb2.ListSubject(token=bytes(32)),
                ][: 1 + variant % 3]
            )
        if name == "SyncList":
            return blacklist_pb2.SyncListBody(from_version=variant % 3, form=variant % 3)
        if name == "FileAppeal":
            return appeal_pb2.FileAppealBody(
                reference=self.pick(self.orders, variant),
                grounds="fz",
                documents=[appeal_pb2.AppealDocument(name="d", sha256=bytes(32))],
            )
        if name == "DecideAppeal":
            return appeal_pb2.DecideAppealBody(
                appeal_id=f"A-{variant}", decision=variant % 3, reason="fz"
            )
        if name == "GetAppeal":
            return appeal_pb2.GetAppealBody(appeal_id=f"A-{variant}")
        if name == "ListAppeals":
            return appeal_pb2.ListAppealsBody(page_size=2, state=variant % 4)
        if name == "SetCaseGrade":
            return case_pb2.SetCaseGradeBody(
                name=self.pick(self.cases, variant), grade=variant % 5, reason="fz"
            )
        if name == "SubmitLead":
            body = lead_pb2.SubmitLeadBody(
                accounts=[MULE], grade=variant % 5, grounds="fz", evidence=[]
            )
            if variant % 2:
                t = body.transactions.add(amount_fen=1_000, from_account=VICTIM, to_account=MULE)
                t.transaction_time.FromDatetime(now - timedelta(minutes=5))
            return body
        if name == "TriageLead":
            triage = lead_pb2.TriageLeadBody(name=self.pick(self.leads, variant))
            match variant % 5:
                case 0:
                    triage.ask_for_more.question = "fz?"
                case 1:
                    triage.dismiss.reason = "fz"
                case 2:
                    triage.list_account.CopyFrom(
                        lead_pb2.ListLeadAccount(
                            account=MULE, basis=1, source_case_id=self.pick(self.cases, variant)
                        )
                    )
                case 3:
                    triage.warn_member.CopyFrom(
                        lead_pb2.WarnFromLead(
                            account=MULE,
                            amount_at_risk_fen=1 + variant,
                            fraud_type=variant % 8,
                            note="fz",
                        )
                    )
                    if variant % 2:
                        triage.warn_member.counterparty.CopyFrom(VICTIM)
                case _:
                    triage.open_case.report.CopyFrom(report(now, (1_000,)))
            return triage
        if name == "AddLeadInformation":
            return lead_pb2.AddLeadInformationBody(name=self.pick(self.leads, variant), answer="fz")
        if name == "SetLeadGrade":
            return lead_pb2.SetLeadGradeBody(
                name=self.pick(self.leads, variant), grade=variant % 5, reason="fz"
            )
        if name == "GetLead":
            return lead_pb2.GetLeadBody(name=self.pick(self.leads, variant))
        if name == "ListLeads":
            return lead_pb2.ListLeadsBody(page_size=2, state=variant % 5, grade=variant % 4)
        if name == "ListAuditEntries":
            return audit_pb2.ListAuditEntriesBody(from_index=variant % 5, page_size=3)
        if name == "GetLogCheckpoint":
            return audit_pb2.GetLogCheckpointBody(fresh=bool(variant % 2))
        if name == "GetInclusionProof":
            return audit_pb2.GetInclusionProofBody(log_index=variant % 7)
        if name == "GetConsistencyProof":
            return audit_pb2.GetConsistencyProofBody(first_size=1 + variant % 3)
        if name == "AcknowledgeBreach":
            return sla_pb2.BreachAcknowledgement(clock_id=f"K-{variant}", note="fz")
        if name == "SendWarning":
            body = warning_pb2.SendWarningBody(
                account=MULE,
                amount_at_risk_fen=1 + variant,
                grade=variant % 4,
                fraud_type=variant % 8,
                text="fz",
            )
            if variant % 2:
                body.counterparty.CopyFrom(VICTIM)
            return body
        if name == "AcknowledgeWarning":
            return warning_pb2.AcknowledgeWarningBody(
                warning_id=self.pick(self.warnings, variant), note="fz"
            )
        if name == "ReportWarningOutcome":
            closing = warning_pb2.ReportWarningOutcomeBody(
                warning_id=self.pick(self.warnings, variant),
                outcome=variant % 5,
                loss_prevented_fen=variant,
                text="fz",
            )
            if variant % 5 == 4:
                closing.report.CopyFrom(report(now, (3_000_000,)))
            return closing
        if name == "GetWarning":
            return warning_pb2.GetWarningBody(warning_id=self.pick(self.warnings, variant))
        if name == "ListWarnings":
            return warning_pb2.ListWarningsBody(
                page_size=2, state=variant % 4, open_only=bool(variant % 2)
            )
        if name == "SetWarningGrade":
            return warning_pb2.SetWarningGradeBody(
                name=f"warnings/{self.pick(self.warnings, variant)}",
                grade=variant % 4,
                reason="fz",
            )
        if name == "GetOutcomeFigures":
            query = outcome_pb2.OutcomeQuery(period=variant % 4)
            query.from_time.FromDatetime(now - timedelta(days=1 + variant))
            query.to_time.FromDatetime(now + timedelta(days=variant % 3))
            return query
        return sla_pb2.ListClocksBody(page_size=3, open_only=bool(variant % 2))

    def instruction(self, variant: int, now: Any) -> order_pb2.OrderInstruction:
        pb = order_pb2.OrderInstruction(case_id=self.pick(self.verified, variant), note="fz")
        order_id = self.pick(self.orders, variant)
        match variant % 4:
            case 0:
                pb.stop.account.CopyFrom(MULE)
                pb.stop.amount_fen = 5_000_000
                for amount, minutes in ((3_000_000, 20), (2_000_000, 19)):
                    fact = pb.stop.transactions.add(amount_fen=amount)
                    fact.transaction_time.FromDatetime(now - timedelta(minutes=minutes))
            case 1:
                pb.freeze.CopyFrom(
                    order_pb2.FreezeInstruction(
                        account=MULE,
                        amount_fen=5_000_000,
                        filed_case_number="F-2026-1",
                        approving_authority="PSB Chaoyang",
                        term_months=6,
                        stop_order_id=order_id,
                    )
                )
            case 2:
                pb.release.CopyFrom(order_pb2.ReleaseInstruction(target_order_id=order_id))
            case _:
                pb.fund_return.CopyFrom(
                    order_pb2.ReturnInstruction(
                        freeze_order_id=order_id, beneficiary=VICTIM, amount_fen=1_000
                    )
                )
        return pb


# ---- the layers ------------------------------------------------------------------------------

RPC_NAMES = sorted(RPCS)
PATHS = {name: scalar_paths(rpc.body.DESCRIPTOR) for name, rpc in RPCS.items()}
LISTS = {name: repeated_paths(rpc.body.DESCRIPTOR) for name, rpc in RPCS.items()}


def layer_raw_bytes(fz: Fuzz) -> None:
    envelope_like = wire_fields.map(lambda b: wire_field(1, 2, b))
    junk = st.one_of(st.binary(max_size=600), envelope_like)

    @fuzz_settings(fz, 110)
    @given(data=junk)
    def run(data: bytes) -> None:
        for name in RPC_NAMES:
            fz.unary(RPCS[name], data)
        fz.stream([data], "BANKA")

    run()


HEADER_FIELDS = ["sender", "recipient", "message_id", "body_type", "key_id", "algorithm"]


def layer_garbled_headers(fz: Fuzz) -> None:
    now_seconds = int(fz.network.clock.now().timestamp())
    edits = st.lists(
        st.one_of(
            st.tuples(st.sampled_from(HEADER_FIELDS), odd_text),
            st.tuples(st.just("signature"), st.binary(max_size=100)),
            st.tuples(st.just("body"), st.binary(max_size=200)),
            st.tuples(st.just("seconds"), seconds_near(now_seconds)),
            st.tuples(st.just("nanos"), ints(*INT32, extra=(-1, 1_000_000_000))),
            st.tuples(st.just("create_time"), st.none()),
        ),
        min_size=1,
        max_size=4,
    )

    @fuzz_settings(fz, 400)
    @given(name=st.sampled_from(RPC_NAMES), variant=st.integers(0, 7), edits=edits)
    def run(name: str, variant: int, edits: list[tuple[str, Any]]) -> None:
        rpc = RPCS[name]
        env = fz.sign_body(rpc, fz.template(name, variant))
        for what, value in edits:
            if what in ("seconds", "nanos"):
                setattr(env.create_time, what, value)
            elif what == "create_time":
                env.ClearField("create_time")
            else:
                setattr(env, what, value)
        fz.unary(rpc, fz.request(env))

    run()


def layer_signed_headers(fz: Fuzz) -> None:
    now_seconds = int(fz.network.clock.now().timestamp())

    @fuzz_settings(fz, 300)
    @given(
        name=st.sampled_from(RPC_NAMES),
        variant=st.integers(0, 7),
        recipient=st.one_of(st.just("HUB"), odd_text),
        message_id=st.one_of(st.none(), odd_text),
        body_type=st.one_of(st.none(), st.sampled_from(BODY_TYPES), odd_text),
        seconds=st.one_of(st.none(), seconds_near(now_seconds)),
        nanos=st.one_of(st.none(), st.integers(0, 999_999_999)),
        mismatch=st.one_of(st.none(), st.sampled_from(CODES)),
    )
    def run(
        name: str,
        variant: int,
        recipient: str,
        message_id: str | None,
        body_type: str | None,
        seconds: int | None,
        nanos: int | None,
        mismatch: str | None,
    ) -> None:
        rpc = RPCS[name]
        body = fz.template(name, variant)
        # On purpose, sometimes: another member's signature on this member's connection.
        signer = mismatch if mismatch in fz.network.keys else rpc.sender
        env = fz.signed(
            signer,
            body.DESCRIPTOR.full_name if body_type is None else body_type,
            body.SerializeToString(),
            recipient=recipient,
            message_id=message_id,
            seconds=seconds,
            nanos=nanos,
        )
        fz.unary(rpc, fz.request(env))

    run()


def layer_signed_fields(fz: Fuzz) -> None:
    now_seconds = int(fz.network.clock.now().timestamp())

    @fuzz_settings(fz, 1300)
    @given(name=st.sampled_from(RPC_NAMES), variant=st.integers(0, 15), data=st.data())
    def run(name: str, variant: int, data: st.DataObject) -> None:
        rpc = RPCS[name]
        body = fz.template(name, variant)
        desc = body.DESCRIPTOR
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(PATHS[name]))
            set_path(body, path, data.draw(values_for(field_at(desc, path), now_seconds)))
        if LISTS[name] and data.draw(st.integers(0, 9)) == 0:
            path = data.draw(st.sampled_from(LISTS[name]))
            blow_up(body, path, data.draw(st.sampled_from([2, 201, 1_000, 10_000])))
        fz.unary(rpc, fz.request(fz.sign_body(rpc, body)))

    run()


def layer_signed_bytes(fz: Fuzz) -> None:
    @fuzz_settings(fz, 350)
    @given(
        name=st.sampled_from(RPC_NAMES),
        variant=st.integers(0, 7),
        mutations=st.lists(byte_mutations, min_size=1, max_size=3),
        after_signing=st.booleans(),
    )
    def run(
        name: str, variant: int, mutations: list[tuple[str, int, bytes]], after_signing: bool
    ) -> None:
        rpc = RPCS[name]
        body = fz.template(name, variant)
        if after_signing:
            # A valid signed request with bytes changed anywhere on the way.
            data = fz.request(fz.sign_body(rpc, body))
            for how, at, extra in mutations:
                data = mutate_bytes(data, "xor" if how == "flip" else how, at, extra)
            fz.unary(rpc, data)
            return
        raw = body.SerializeToString()
        for how, at, extra in mutations:
            raw = mutate_bytes(raw, how, at, extra)
        env = fz.signed(rpc.sender, body.DESCRIPTOR.full_name, raw)
        fz.unary(rpc, fz.request(env))

    run()


def layer_stream(fz: Fuzz) -> None:
    subscribe = delivery_pb2.SubscribeBody.DESCRIPTOR.full_name
    ack = delivery_pb2.AckBody.DESCRIPTOR.full_name
    sequences = st.one_of(
        st.lists(ints(*INT64), max_size=20),
        st.sampled_from([10_000, 100_000]).map(lambda n: list(range(1, n + 1))),
    )
    frame = st.one_of(
        st.tuples(st.just("ack"), sequences),
        st.tuples(st.just("junk"), st.binary(max_size=200)),
        st.tuples(st.just("mutated-ack"), st.tuples(sequences, byte_mutations)),
        st.tuples(st.just("foreign-ack"), st.sampled_from(["BANKB", "CENTRE"])),
    )

    @fuzz_settings(fz, 400)
    @given(
        code=st.sampled_from(["BANKA", "BANKB", "CENTRE"]),
        name=st.one_of(st.just("fz"), odd_text),
        hello=st.sampled_from(["ok", "ok", "ack-first", "junk", "wrong-type"]),
        frames=st.lists(frame, max_size=3),
    )
    def run(code: str, name: str, hello: str, frames: list[tuple[str, Any]]) -> None:
        def req(env: envelope_pb2.Envelope) -> bytes:
            return delivery_pb2.StreamDeliveriesRequest(envelope=env).SerializeToString()

        hello_body = delivery_pb2.SubscribeBody(connection_name=name).SerializeToString()
        first = {
            "ok": lambda: req(fz.signed(code, subscribe, hello_body)),
            "ack-first": lambda: req(fz.signed(code, ack, b"\x08\x01")),
            "junk": lambda: hello_body,
            "wrong-type": lambda: req(fz.signed(code, "stophub.v1.Report", hello_body)),
        }[hello]()
        messages = [first]
        for kind, value in frames:
            if kind == "ack":
                body = delivery_pb2.AckBody(sequences=value).SerializeToString()
                messages.append(req(fz.signed(code, ack, body)))
            elif kind == "junk":
                messages.append(value)
            elif kind == "mutated-ack":
                body = delivery_pb2.AckBody(sequences=value[0]).SerializeToString()
                messages.append(req(fz.signed(code, ack, mutate_bytes(body, *value[1]))))
            else:
                # On purpose: another member's signed ack on this member's stream.
                messages.append(req(fz.signed(value, ack, b"\x08\x01")))
        fz.stream(messages, code)

    run()


# ---- the tests -------------------------------------------------------------------------------


async def _setup(fz: Fuzz) -> None:
    """A few cases and orders for the bodies to point at, so mutations reach the rules."""

    def send(name: str, body: Message) -> Message | None:
        return fz.unary(RPCS[name], fz.request(fz.sign_body(RPCS[name], body)))

    def build() -> None:
        for i in range(4):
            case = send("CreateReport", report(fz.network.clock.now()))
            assert isinstance(case, case_pb2.Case)
            if i == 3:
                continue  # one stays unverified
            confirmed = case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            assert send(
                "VerifyReport", case_pb2.Verification(case_id=case.case_id, outcome=confirmed)
            )
            fz.verified.append(case.case_id)
            stop = fz.instruction(0, fz.network.clock.now())
            stop.case_id = case.case_id
            assert isinstance(send("IssueOrder", stop), order_pb2.Order)
        for variant in range(3):
            assert isinstance(send("SubmitLead", fz.template("SubmitLead", variant)), lead_pb2.Lead)

    await asyncio.to_thread(build)


async def _assert_healthy(fz: Fuzz, network: Network) -> None:
    channel = fz.channel("BANKA")
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    case = await asyncio.to_thread(
        fz.unary,
        RPCS["CreateReport"],
        fz.request(fz.sign_body(RPCS["CreateReport"], report(network.clock.now()))),
    )
    assert isinstance(case, case_pb2.Case) and case.case_id.startswith("C")


def _server_exceptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or (r.exc_info and r.name.startswith(("hub", "grpc")))
    ]


@pytest.fixture
async def pg_network(
    tmp_path: Path, clock: ManualClock, postgres_url: str
) -> AsyncIterator[Network]:
    """The same network on PostgreSQL, which refuses what SQLite stores (NUL, long text)."""
    net = await start_network(tmp_path, clock, database_url=postgres_url)
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


async def fuzz_unary(network: Network, caplog: pytest.LogCaptureFixture, scale: float) -> Fuzz:
    caplog.set_level(logging.DEBUG, logger="hub.api")
    fz = Fuzz(network, asyncio.get_running_loop(), scale=scale)
    try:
        await _setup(fz)
        await asyncio.to_thread(layer_raw_bytes, fz)
        await asyncio.to_thread(layer_garbled_headers, fz)
        await asyncio.to_thread(layer_signed_headers, fz)
        await asyncio.to_thread(layer_signed_fields, fz)
        await asyncio.to_thread(layer_signed_bytes, fz)
        await _assert_healthy(fz, network)
    finally:
        await fz.close()
    print(f"\nfuzz: {fz.sent} requests {dict(fz.statuses)}\nreasons: {dict(fz.reasons)}")
    assert not _server_exceptions(caplog)
    # The signed layers reached the rules, not only the envelope checks.
    assert fz.statuses["OK"] > 100 * scale, fz.statuses
    assert fz.reasons["INVALID_FIELD"] > 300 * scale, fz.reasons
    return fz


async def test_every_unary_rpc_survives_hostile_input(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    fz = await fuzz_unary(network, caplog, 1.0)
    assert fz.sent >= 3_000, fz.statuses


@pytest.mark.postgres
async def test_every_unary_rpc_survives_hostile_input_on_postgresql(
    pg_network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    fz = await fuzz_unary(pg_network, caplog, 0.3)
    assert fz.sent >= 900, fz.statuses


async def test_delivery_stream_survives_hostile_input(
    network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hub.api")
    fz = Fuzz(network, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(layer_stream, fz)
        await _assert_healthy(fz, network)
    finally:
        await fz.close()
    print(f"\nstream fuzz: {fz.sent} streams {dict(fz.statuses)}\nreasons: {dict(fz.reasons)}")
    assert fz.sent >= 400, fz.statuses
    assert fz.statuses["OK"] > 10 and fz.statuses["INVALID_ARGUMENT"] > 10, fz.statuses
    assert not _server_exceptions(caplog)


async def test_request_beyond_max_message_size_is_resource_exhausted(network: Network) -> None:
    fz = Fuzz(network, asyncio.get_running_loop())
    try:
        rpc = RPCS["CreateReport"]
        body = report(network.clock.now())
        body.description = "x" * (MAX_MESSAGE + 1024)
        data = fz.request(fz.sign_body(rpc, body))
        err = await fz._unary(rpc.path, data, rpc.sender)
        assert isinstance(err, grpc.aio.AioRpcError)
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert err.details()
        await _assert_healthy(fz, network)
    finally:
        await fz.close()
