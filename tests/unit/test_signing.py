"""Envelope signing: the published vectors, the spec page, and the properties
that make the layout safe (every field bound, no ambiguity, exact bytes)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.crypto.envelope import (
    Signer,
    create_time_of,
    digest_of,
    header_of,
    seal,
    seal_message,
    verify_envelope,
)
from hub.crypto.keys import PrivateKey, load_private_key, save_private_key
from hub.crypto.signing import (
    ALGORITHMS,
    ECDSA_P256,
    ED25519,
    ENVELOPE_TAG,
    SM2_SM3,
    Header,
    SignatureError,
    key_id_for,
    message_digest,
    signing_input,
    verify_signature,
)
from hub.crypto.sm2 import Sm2PrivateKey
from stophub.v1 import envelope_pb2

ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = ROOT / "tests" / "vectors" / "signing.json"
DOC_PATH = ROOT / "docs" / "signing.md"

VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
BY_NAME = {v["name"]: v for v in VECTORS}
HEADER_FIELDS = [f.name for f in dataclasses.fields(Header)]
STRING_FIELDS = [name for name in HEADER_FIELDS if name not in ("create_seconds", "create_nanos")]


def header_from(vector: dict[str, Any]) -> Header:
    h = vector["header"]
    # Vectors made before the people fields existed do not name them: empty.
    return Header(**{name: h.get(name, "") for name in HEADER_FIELDS})


def p256_key_from_scalar(scalar_hex: str) -> PrivateKey:
    key = ec.derive_private_key(int(scalar_hex, 16), ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return PrivateKey.from_pem(pem)


def private_key_of(vector: dict[str, Any]) -> PrivateKey:
    if "seed" in vector:
        return PrivateKey.from_ed25519_seed(bytes.fromhex(vector["seed"]))
    if vector["header"]["algorithm"] == SM2_SM3:
        return PrivateKey(
            Sm2PrivateKey(
                bytes.fromhex(vector["private_scalar"]), vector["distinguishing_id"].encode()
            )
        )
    return p256_key_from_scalar(vector["private_scalar"])


# Generated once: hypothesis forbids function-scoped fixtures in @given tests,
# and key generation per example would dominate the run time.
KEYS = {alg: PrivateKey.generate(alg) for alg in sorted(ALGORITHMS)}
BASIC = BY_NAME["ed25519-basic"]
BASIC_HEADER = header_from(BASIC)
BASIC_BODY = bytes.fromhex(BASIC["body"])
BASIC_TIME = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# --- the vectors -----------------------------------------------------------------


def test_vector_file_covers_the_required_cases() -> None:
    assert set(BY_NAME) == {
        "ed25519-basic",
        "ed25519-unicode-empty-body",
        "ecdsa-p256-basic",
        "ed25519-negative-message-id",
        "ed25519-operator-approver",
        "sm2-sm3-basic",
        "sm2-sm3-distinguishing-id",
    }
    assert [v["valid"] for v in VECTORS].count(False) == 1


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_signing_input_digest_and_key_id(vector: dict[str, Any]) -> None:
    header = header_from(vector)
    body = bytes.fromhex(vector["body"])
    assert signing_input(header, body).hex() == vector["signing_input"]
    assert message_digest(header, body).hex() == vector["digest"]
    public_key = bytes.fromhex(vector["public_key"])
    assert key_id_for(header.algorithm, public_key) == vector["key_id"] == header.key_id


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_key_derivation(vector: dict[str, Any]) -> None:
    key = private_key_of(vector)
    assert key.algorithm == vector["header"]["algorithm"]
    assert key.public_key.hex() == vector["public_key"]
    assert key.key_id == vector["key_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_verification_outcome(vector: dict[str, Any]) -> None:
    ok = verify_signature(
        vector["header"]["algorithm"],
        bytes.fromhex(vector["public_key"]),
        bytes.fromhex(vector["signature"]),
        bytes.fromhex(vector["signing_input"]),
    )
    assert ok is vector["valid"]


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if v["valid"] and v["header"]["algorithm"] == ED25519],
    ids=lambda v: v["name"],
)
def test_ed25519_vector_signature_is_reproduced_exactly(vector: dict[str, Any]) -> None:
    key = private_key_of(vector)
    data = signing_input(header_from(vector), bytes.fromhex(vector["body"]))
    assert key.sign(data).hex() == vector["signature"]


def test_ecdsa_vector_is_the_rfc6979_signature() -> None:
    vector = BY_NAME["ecdsa-p256-basic"]
    key = ec.derive_private_key(int(vector["private_scalar"], 16), ec.SECP256R1())
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        signature = key.sign(bytes.fromhex(vector["signing_input"]), algorithm)
    except (TypeError, UnsupportedAlgorithm) as exc:  # cryptography < 44 or old OpenSSL
        pytest.skip(f"deterministic ECDSA unavailable: {exc}")
    assert signature.hex() == vector["signature"]


def test_ecdsa_signatures_are_randomized_but_verify() -> None:
    key = p256_key_from_scalar(BY_NAME["ecdsa-p256-basic"]["private_scalar"])
    data = bytes.fromhex(BY_NAME["ecdsa-p256-basic"]["signing_input"])
    first, second = key.sign(data), key.sign(data)
    assert first != second
    assert first[0] == 0x30  # DER SEQUENCE, as Java and Go expect
    for signature in (first, second):
        assert verify_signature(ECDSA_P256, key.public_key, signature, data)


def test_negative_vector_differs_from_basic_only_in_message_id() -> None:
    negative = BY_NAME["ed25519-negative-message-id"]
    changed = {k for k in BASIC["header"] if BASIC["header"][k] != negative["header"][k]}
    assert changed == {"message_id"}
    assert negative["signature"] == BASIC["signature"]


# --- the people behind a message (envelope fields 10 and 11) -------------------------


# The signing inputs of (a)-(d) as published before the people fields existed: an envelope
# without people must keep its signature, byte for byte.
OLD_SIGNING_INPUT_SHA256 = {
    "ed25519-basic": "767fa2015ca5b5aecd0644436fdde441cf9a97b1bd3b66fb3e14c37c98019893",
    "ed25519-unicode-empty-body": (
        "5cf436c90284c7e80e11534627ac674d93c88822b38cdd4a2dd1bff5617ce54f"
    ),
    "ecdsa-p256-basic": "183be126dc09cd75b4359de1c36fc60d17a24be9b4985514cc8b3427d0725f9a",
    "ed25519-negative-message-id": (
        "8d319c476415bc4f93f2c4990349516b29558524a7d0992c676f8c745564df38"
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_SIGNING_INPUT_SHA256))
def test_vectors_without_people_are_unchanged(name: str) -> None:
    vector = BY_NAME[name]
    assert "operator" not in vector["header"] and "approver" not in vector["header"]
    header = header_from(vector)
    assert header.operator == header.approver == ""
    assert (
        message_digest(header, bytes.fromhex(vector["body"])).hex()
        == (OLD_SIGNING_INPUT_SHA256[name])
    )


def test_people_follow_the_body_only_when_set() -> None:
    people = BY_NAME["ed25519-operator-approver"]
    header = header_from(people)
    without = dataclasses.replace(header, operator="", approver="")
    body = bytes.fromhex(people["body"])
    tail = b"\x00\x00\x00\x06li.wei" + b"\x00\x00\x00\x06" + "张敏".encode()
    assert signing_input(header, body) == signing_input(without, body) + tail
    assert signing_input(header, body).hex() == people["signing_input"]
    # An operator alone still writes both fields, the approver as an empty one.
    alone = dataclasses.replace(header, approver="")
    assert signing_input(alone, body) == (
        signing_input(without, body) + b"\x00\x00\x00\x06li.wei\x00\x00\x00\x00"
    )
    # Moving a person between the two fields changes the input.
    swapped = dataclasses.replace(header, operator="", approver="li.wei")
    assert signing_input(swapped, body) != signing_input(alone, body)


def test_sealed_people_are_signed_and_travel_in_fields_10_and_11() -> None:
    key = KEYS[ED25519]
    env = seal(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"x",
        operator="li.wei",
        approver="zhang.min",
    )
    assert envelope_pb2.Envelope.DESCRIPTOR.fields_by_name["operator"].number == 10
    assert envelope_pb2.Envelope.DESCRIPTOR.fields_by_name["approver"].number == 11
    received = envelope_pb2.Envelope.FromString(env.SerializeToString())
    assert (received.operator, received.approver) == ("li.wei", "zhang.min")
    assert verify_envelope(received, key.public_key)
    for field, value in (("operator", "someone.else"), ("approver", ""), ("operator", "")):
        copy = envelope_pb2.Envelope()
        copy.CopyFrom(received)
        setattr(copy, field, value)
        assert not verify_envelope(copy, key.public_key), (field, value)


def test_doc_people_tail_matches_vector_e() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text.split("### The people behind a message", 1)[1].split("### Worked example")[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `([0-9a-f ]+)` \|", section, re.M)
    people = BY_NAME["ed25519-operator-approver"]
    full = bytes.fromhex(people["signing_input"])
    assert rows and int(rows[0][0]) == 125
    assembled = full[:125]
    for offset, length, hex_bytes in rows:
        chunk = bytes.fromhex(hex_bytes)
        assert int(offset) == len(assembled)
        assert int(length) == len(chunk)
        assembled += chunk
    assert assembled == full
    assert f"{len(full)} bytes in all" in section
    assert people["digest"] in section


# --- the spec page cannot drift from the vectors ----------------------------------


def parse_doc_vectors(text: str) -> dict[str, dict[str, str]]:
    vectors: dict[str, dict[str, str]] = {}
    for block in re.findall(r"^```text\n(.*?)^```", text, re.S | re.M):
        lines = block.splitlines()
        if not lines or not lines[0].startswith("vector: "):
            continue
        fields: dict[str, str] = {}
        current = ""
        for line in lines:
            if line.startswith("  "):
                fields[current] += line.strip()
            else:
                current, _, value = line.partition(":")
                value = value.strip()
                fields[current] = "" if value == "(empty)" else value
        vectors[fields["vector"]] = fields
    return vectors


def flatten(vector: dict[str, Any]) -> dict[str, str]:
    flat = {"vector": vector["name"]}
    for key in (
        "seed",
        "private_scalar",
        "distinguishing_id",
        "nonce",
        "z",
        "public_key",
        "key_id",
        "body",
    ):
        if key in vector:
            flat[key] = vector[key]
    for key, value in vector["header"].items():
        flat[f"header.{key}"] = str(value)
    for key in ("signing_input", "digest", "signature"):
        flat[key] = vector[key]
    flat["verifies"] = "true" if vector["valid"] else "false"
    return flat


def test_doc_vectors_match_json() -> None:
    documented = parse_doc_vectors(DOC_PATH.read_text(encoding="utf-8"))
    assert set(documented) == set(BY_NAME)
    for name, fields in documented.items():
        assert fields == flatten(BY_NAME[name]), name


def test_doc_worked_example_matches_vector_a() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1].split("## Algorithms", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `([0-9a-f ]+)` \|", section, re.M)
    assert rows
    assembled = b""
    for offset, length, hex_bytes in rows:
        chunk = bytes.fromhex(hex_bytes)
        assert int(offset) == len(assembled)
        assert int(length) == len(chunk)
        assembled += chunk
    assert assembled.hex() == BASIC["signing_input"]
    assert BASIC["digest"] in section
    assert f"{len(assembled)} bytes in all" in section


def test_doc_states_tag_and_key_id_example() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    assert ENVELOPE_TAG.hex(" ") in text
    assert f"`{BASIC['public_key']}` has key id\n`{BASIC['key_id']}`" in text


# --- every field is bound ---------------------------------------------------------


def _changed(header: Header, field: str) -> Header:
    value = getattr(header, field)
    change: dict[str, Any]
    if field == "create_nanos":
        change = {field: (value + 1) % 1_000_000_000}
    elif isinstance(value, int):
        change = {field: value + 1}
    else:
        change = {field: value + "x"}
    return dataclasses.replace(header, **change)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("field", HEADER_FIELDS)
def test_changing_any_header_field_breaks_verification(algorithm: str, field: str) -> None:
    key = KEYS[algorithm]
    header = dataclasses.replace(BASIC_HEADER, algorithm=algorithm, key_id=key.key_id)
    signature = key.sign(signing_input(header, BASIC_BODY))
    assert verify_signature(algorithm, key.public_key, signature, signing_input(header, BASIC_BODY))
    tampered = signing_input(_changed(header, field), BASIC_BODY)
    assert not verify_signature(algorithm, key.public_key, signature, tampered)
    assert message_digest(_changed(header, field), BASIC_BODY) != message_digest(header, BASIC_BODY)


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_changing_any_envelope_field_breaks_verify_envelope(field: str) -> None:
    key = KEYS[ED25519]
    env = seal(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="msg-0001",
        create_time=BASIC_TIME,
        body_type="stophub.v1.Report",
        body=BASIC_BODY,
    )
    setattr(env, field, getattr(env, field) + "x")
    try:
        assert not verify_envelope(env, key.public_key)
    except SignatureError:
        # Changing the algorithm name makes it unknown, which is refused
        # outright rather than answered False.
        assert field == "algorithm"


def test_changing_create_time_breaks_verify_envelope() -> None:
    key = KEYS[ED25519]
    env = seal(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"",
    )
    for seconds, nanos in ((1, 0), (0, 1)):
        copy = envelope_pb2.Envelope()
        copy.CopyFrom(env)
        copy.create_time.seconds += seconds
        copy.create_time.nanos += nanos
        assert not verify_envelope(copy, key.public_key)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_flipping_any_body_bit_breaks_verification(algorithm: str) -> None:
    key = KEYS[algorithm]
    header = dataclasses.replace(BASIC_HEADER, algorithm=algorithm, key_id=key.key_id)
    signature = key.sign(signing_input(header, BASIC_BODY))
    for bit in range(len(BASIC_BODY) * 8):
        body = bytearray(BASIC_BODY)
        body[bit // 8] ^= 1 << (bit % 8)
        data = signing_input(header, bytes(body))
        assert not verify_signature(algorithm, key.public_key, signature, data), bit


def test_appending_or_truncating_body_breaks_verification() -> None:
    key = KEYS[ED25519]
    signature = key.sign(signing_input(BASIC_HEADER, BASIC_BODY))
    for body in (BASIC_BODY + b"\x00", BASIC_BODY[:-1], b""):
        data = signing_input(BASIC_HEADER, body)
        assert not verify_signature(ED25519, key.public_key, signature, data)


def test_length_prefixes_prevent_ambiguity() -> None:
    ab_c = dataclasses.replace(BASIC_HEADER, sender="AB", recipient="C")
    a_bc = dataclasses.replace(BASIC_HEADER, sender="A", recipient="BC")
    assert signing_input(ab_c, b"") != signing_input(a_bc, b"")
    # Moving bytes between the last header field and the body is the same trap.
    assert signing_input(dataclasses.replace(BASIC_HEADER, body_type="x"), b"y") != (
        signing_input(dataclasses.replace(BASIC_HEADER, body_type="xy"), b"")
    )


def test_strings_are_utf8_without_normalisation() -> None:
    composed = dataclasses.replace(BASIC_HEADER, sender="\u00e9")
    decomposed = dataclasses.replace(BASIC_HEADER, sender="e\u0301")
    assert b"\x00\x00\x00\x02\xc3\xa9" in signing_input(composed, b"")
    assert b"\x00\x00\x00\x03e\xcc\x81" in signing_input(decomposed, b"")


def test_create_time_layout() -> None:
    header = dataclasses.replace(BASIC_HEADER, create_seconds=-1, create_nanos=999_999_999)
    expected = b"\x00\x00\x00\x0c" + b"\xff" * 8 + struct.pack(">i", 999_999_999)
    assert expected in signing_input(header, b"")


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, 2**31])
def test_nanos_out_of_range_is_rejected(nanos: int) -> None:
    with pytest.raises(ValueError, match="nanos"):
        signing_input(dataclasses.replace(BASIC_HEADER, create_nanos=nanos), b"")


@pytest.mark.parametrize("seconds", [2**63, -(2**63) - 1])
def test_seconds_outside_int64_are_rejected(seconds: int) -> None:
    with pytest.raises(ValueError, match="seconds"):
        signing_input(dataclasses.replace(BASIC_HEADER, create_seconds=seconds), b"")


# --- parsing the layout back proves it unambiguous -----------------------------------


def parse_signing_input(data: bytes) -> tuple[Header, bytes]:
    assert data.startswith(ENVELOPE_TAG)
    pos = len(ENVELOPE_TAG)
    fields: list[bytes] = []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        fields.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(data) and len(fields) == 8
    algorithm, key_id, sender, recipient, message_id, ts, body_type, body = fields
    assert len(ts) == 12
    seconds, nanos = struct.unpack(">qi", ts)
    header = Header(
        algorithm=algorithm.decode(),
        key_id=key_id.decode(),
        sender=sender.decode(),
        recipient=recipient.decode(),
        message_id=message_id.decode(),
        create_seconds=seconds,
        create_nanos=nanos,
        body_type=body_type.decode(),
    )
    return header, body


headers = st.builds(
    Header,
    algorithm=st.sampled_from(sorted(ALGORITHMS)),
    key_id=st.text(max_size=20),
    sender=st.text(max_size=20),
    recipient=st.text(max_size=20),
    message_id=st.text(max_size=40),
    create_seconds=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    create_nanos=st.integers(min_value=0, max_value=999_999_999),
    body_type=st.text(max_size=40),
)


@given(header=headers, body=st.binary(max_size=512))
def test_signing_input_parses_back_to_its_fields(header: Header, body: bytes) -> None:
    assert parse_signing_input(signing_input(header, body)) == (header, body)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, body=st.binary(max_size=512), other_body=st.binary(max_size=512))
def test_sign_then_verify(header: Header, body: bytes, other_body: bytes) -> None:
    key = KEYS[header.algorithm]
    header = dataclasses.replace(header, key_id=key.key_id)
    data = signing_input(header, body)
    signature = key.sign(data)
    assert verify_signature(header.algorithm, key.public_key, signature, data)
    if other_body != body:
        other = signing_input(header, other_body)
        assert not verify_signature(header.algorithm, key.public_key, signature, other)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    algorithm=st.sampled_from(sorted(ALGORITHMS)),
    sender=st.text(max_size=20),
    recipient=st.text(max_size=20),
    message_id=st.text(max_size=40),
    create_time=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
    body_type=st.text(max_size=40),
    body=st.binary(max_size=512),
)
def test_seal_then_verify_over_the_wire(
    algorithm: str,
    sender: str,
    recipient: str,
    message_id: str,
    create_time: datetime,
    body_type: str,
    body: bytes,
) -> None:
    key = KEYS[algorithm]
    env = seal(
        key,
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        create_time=create_time,
        body_type=body_type,
        body=body,
    )
    received = envelope_pb2.Envelope.FromString(env.SerializeToString())
    assert verify_envelope(received, key.public_key)
    assert digest_of(received) == digest_of(env)
    assert create_time_of(received) == create_time
    assert received.body == body


# --- envelopes --------------------------------------------------------------------


def test_seal_reproduces_vector_a() -> None:
    key = private_key_of(BASIC)
    env = seal(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="msg-0001",
        create_time=BASIC_TIME,
        body_type="stophub.v1.Report",
        body=BASIC_BODY,
    )
    assert env.algorithm == ED25519
    assert env.key_id == BASIC["key_id"]
    assert (env.create_time.seconds, env.create_time.nanos) == (1767323045, 123456000)
    assert env.signature.hex() == BASIC["signature"]
    assert header_of(env) == BASIC_HEADER
    assert digest_of(env).hex() == BASIC["digest"]
    assert verify_envelope(env, key.public_key)
    assert create_time_of(env) == BASIC_TIME
    assert create_time_of(env).tzinfo == UTC


def test_seal_converts_create_time_exactly() -> None:
    key = KEYS[ED25519]
    cases = [
        (datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), (-1, 500_000_000)),
        (datetime(1970, 1, 1, tzinfo=UTC), (0, 0)),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), (253402300799, 999_999_000)),
        (
            datetime(2026, 1, 2, 11, 4, 5, 123456, tzinfo=timezone(timedelta(hours=8))),
            (1767323045, 123_456_000),
        ),
    ]
    for moment, expected in cases:
        env = seal(
            key,
            sender="A",
            recipient="B",
            message_id="m",
            create_time=moment,
            body_type="t",
            body=b"",
        )
        assert (env.create_time.seconds, env.create_time.nanos) == expected
        assert create_time_of(env) == moment


def test_seal_rejects_naive_create_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        seal(
            KEYS[ED25519],
            sender="A",
            recipient="B",
            message_id="m",
            create_time=datetime(2026, 1, 2, 3, 4, 5),
            body_type="t",
            body=b"",
        )


def test_create_time_of_truncates_nanos_but_header_keeps_them() -> None:
    env = envelope_pb2.Envelope()
    env.create_time.seconds = 10
    env.create_time.nanos = 999_999_999
    assert create_time_of(env) == datetime(1970, 1, 1, 0, 0, 10, 999999, tzinfo=UTC)
    assert header_of(env).create_nanos == 999_999_999


def test_envelope_with_invalid_nanos_is_rejected() -> None:
    env = seal(
        KEYS[ED25519],
        sender="A",
        recipient="B",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"",
    )
    env.create_time.nanos = -5
    with pytest.raises(ValueError, match="nanos"):
        verify_envelope(env, KEYS[ED25519].public_key)
    with pytest.raises(ValueError, match="nanos"):
        digest_of(env)


def test_seal_message_uses_full_name_and_serialized_bytes() -> None:
    message = timestamp_pb2.Timestamp(seconds=12, nanos=34)
    key = KEYS[ECDSA_P256]
    env = seal_message(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="m",
        create_time=BASIC_TIME,
        message=message,
    )
    assert env.body_type == "google.protobuf.Timestamp"
    assert env.body == message.SerializeToString()
    assert verify_envelope(env, key.public_key)


def test_verification_uses_body_bytes_as_received() -> None:
    # Field 2 before field 1: valid protobuf that no serializer emits, so a
    # verifier that re-serialized the parsed body would reject this envelope.
    body = b"\x10\x22\x08\x0c"
    parsed = timestamp_pb2.Timestamp.FromString(body)
    assert parsed.SerializeToString() != body
    key = KEYS[ED25519]
    env = seal(
        key,
        sender="BANKA",
        recipient="HUB",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="google.protobuf.Timestamp",
        body=body,
    )
    received = envelope_pb2.Envelope.FromString(env.SerializeToString())
    assert received.body == body
    assert verify_envelope(received, key.public_key)


def test_digest_ignores_signature_so_resigned_resends_match() -> None:
    key = KEYS[ECDSA_P256]
    kwargs: dict[str, Any] = dict(
        sender="BANKA",
        recipient="HUB",
        message_id="msg-1",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"abc",
    )
    first, second = seal(key, **kwargs), seal(key, **kwargs)
    assert first.signature != second.signature
    assert digest_of(first) == digest_of(second)
    changed = seal(key, **{**kwargs, "body": b"abd"})
    assert digest_of(changed) != digest_of(first)


class _DelegatingSigner:
    """A Signer that is not a PrivateKey, as an HSM-backed signer would be."""

    def __init__(self, key: PrivateKey) -> None:
        self.algorithm = key.algorithm
        self.key_id = key.key_id
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def test_seal_accepts_any_signer() -> None:
    key = KEYS[ED25519]
    signer: Signer = _DelegatingSigner(key)
    env = seal(
        signer,
        sender="A",
        recipient="B",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"x",
    )
    assert verify_envelope(env, key.public_key)


def test_seal_refuses_a_signer_with_an_unknown_algorithm() -> None:
    signer = _DelegatingSigner(KEYS[ED25519])
    signer.algorithm = "sm9"
    with pytest.raises(SignatureError, match="unknown"):
        seal(
            signer,
            sender="A",
            recipient="B",
            message_id="m",
            create_time=BASIC_TIME,
            body_type="t",
            body=b"",
        )


# --- errors -----------------------------------------------------------------------


def test_unknown_algorithm_raises_signature_error() -> None:
    key = KEYS[ED25519]
    with pytest.raises(SignatureError, match="unknown"):
        verify_signature("rsa-sha256", key.public_key, b"\x00" * 64, b"data")
    with pytest.raises(SignatureError, match="unknown"):
        key_id_for("rsa-sha256", key.public_key)
    with pytest.raises(SignatureError, match="unknown"):
        PrivateKey.generate("rsa-sha256")
    env = seal(
        key,
        sender="A",
        recipient="B",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"",
    )
    env.algorithm = "ED25519"  # names are exact; no case folding
    with pytest.raises(SignatureError, match="unknown"):
        verify_envelope(env, key.public_key)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_malformed_signature_returns_false(algorithm: str) -> None:
    key = KEYS[algorithm]
    data = b"some signing input"
    good = key.sign(data)
    malformed = [
        b"",
        good[:-1],
        good + b"\x00",
        b"\x00" * len(good),
        b"\x30\x00",
        b"\xff" * 64,
        bytes([good[0] ^ 0x01]) + good[1:],
    ]
    for signature in malformed:
        assert verify_signature(algorithm, key.public_key, signature, data) is False


def test_malformed_envelope_signature_returns_false() -> None:
    key = KEYS[ED25519]
    env = seal(
        key,
        sender="A",
        recipient="B",
        message_id="m",
        create_time=BASIC_TIME,
        body_type="t",
        body=b"",
    )
    env.signature = b"not a signature"
    assert verify_envelope(env, key.public_key) is False


def test_p1363_signature_is_not_accepted_for_ecdsa() -> None:
    key = KEYS[ECDSA_P256]
    data = b"input"
    der = key.sign(data)
    # Decode the DER pair into fixed-width r || s, the format Java calls
    # SHA256withECDSAinP1363Format; the spec requires DER.
    r, s = decode_dss_signature(der)
    p1363 = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert verify_signature(ECDSA_P256, key.public_key, der, data)
    assert not verify_signature(ECDSA_P256, key.public_key, p1363, data)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _der(r: int, s: int, *, pad_r: bool = False) -> bytes:
    def integer(value: int, pad: bool) -> bytes:
        raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
        raw = b"\x00" + raw if pad else raw
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r, pad_r) + integer(s, False)
    return b"\x30" + bytes([len(body)]) + body


def test_ecdsa_accepts_high_s_but_only_strict_der() -> None:
    # docs/signing.md promises both: Java and Go may emit either S, and a
    # lax DER parser would let one signature have many encodings.
    key = KEYS[ECDSA_P256]
    data = b"input"
    r, s = decode_dss_signature(key.sign(data))
    assert verify_signature(ECDSA_P256, key.public_key, _der(r, s), data)
    assert verify_signature(ECDSA_P256, key.public_key, _der(r, P256_ORDER - s), data)
    assert not verify_signature(ECDSA_P256, key.public_key, _der(r, s, pad_r=True), data)


@pytest.mark.parametrize(
    ("algorithm", "public_key"),
    [
        (ED25519, b""),
        (ED25519, b"\x01" * 31),
        (ED25519, b"\x01" * 33),
        (ECDSA_P256, b""),
        (ECDSA_P256, KEYS[ECDSA_P256].public_key[:33]),  # truncated
        (ECDSA_P256, b"\x02" + KEYS[ECDSA_P256].public_key[1:33]),  # compressed form
        (ECDSA_P256, b"\x04" + b"\x00" * 64),  # not on the curve
        (ECDSA_P256, KEYS[ED25519].public_key),
    ],
    # Named, not shown: the keys are made afresh in each process, and pytest-xdist's workers
    # must collect the same test ids.
    ids=[
        "ed25519-empty",
        "ed25519-31-bytes",
        "ed25519-33-bytes",
        "p256-empty",
        "p256-truncated",
        "p256-compressed",
        "p256-off-the-curve",
        "p256-given-an-ed25519-key",
    ],
)
def test_malformed_public_key_raises_signature_error(algorithm: str, public_key: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(algorithm, public_key, b"\x00" * 64, b"data")
    with pytest.raises(SignatureError):
        key_id_for(algorithm, public_key)


def test_key_id_format_and_algorithm_binding() -> None:
    key = KEYS[ED25519]
    key_id = key_id_for(ED25519, key.public_key)
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    assert key_id == key.key_id


# --- keys -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_pem_round_trip(algorithm: str) -> None:
    key = PrivateKey.generate(algorithm)
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = PrivateKey.from_pem(pem)
    assert loaded.algorithm == key.algorithm == algorithm
    assert loaded.public_key == key.public_key
    assert loaded.key_id == key.key_id
    assert loaded.to_pem() == pem
    data = b"round trip"
    assert verify_signature(algorithm, key.public_key, loaded.sign(data), data)


def test_public_key_encodings() -> None:
    assert len(KEYS[ED25519].public_key) == 32
    point = KEYS[ECDSA_P256].public_key
    assert len(point) == 65 and point[0] == 0x04


def test_from_pem_rejects_garbage_and_unsupported_keys() -> None:
    with pytest.raises(SignatureError):
        PrivateKey.from_pem(b"not a pem")
    unsupported: list[PrivateKeyTypes] = [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ]
    for other in unsupported:
        pem = other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(SignatureError, match="unsupported"):
            PrivateKey.from_pem(pem)


def test_from_pem_rejects_encrypted_key() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(SignatureError):
        PrivateKey.from_pem(pem)


def test_ed25519_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey.from_ed25519_seed(b"\x00" * 31)


def test_repr_does_not_leak_key_material() -> None:
    key = PrivateKey.from_ed25519_seed(bytes(range(32)))
    text = repr(key)
    assert key.key_id in text
    assert bytes(range(32)).hex() not in text
    assert "PRIVATE" not in text


def test_save_private_key_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    key = PrivateKey.generate(ECDSA_P256)
    path = tmp_path / "keys" / "nested" / "hub.pem"
    old_umask = os.umask(0o000)  # a permissive umask must not widen the mode
    try:
        save_private_key(key, path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_private_key(path)
    assert loaded.key_id == key.key_id
    assert load_private_key(str(path)).public_key == key.public_key


def test_save_private_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "hub.pem"
    first = PrivateKey.generate()
    save_private_key(first, path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_private_key(PrivateKey.generate(), path)
    assert path.read_bytes() == before
    assert load_private_key(path).key_id == first.key_id
