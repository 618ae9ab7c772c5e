"""`sm2-sm3`: the standards' vectors, our binding against an independent implementation
(tests/sm2_reference.py, written from GB/T 32918.2) and against the `openssl` command line in
both directions, the key record and key files, and the hub signing, verifying and refusing
by the network's algorithm policy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.sdk.client import read_hub_key
from hub.cli import main
from hub.crypto import sm2
from hub.crypto.envelope import seal_message, verify_envelope
from hub.crypto.keys import PrivateKey, load_private_key
from hub.crypto.public import public_key_from_pem, public_key_to_pem, with_distinguishing_id
from hub.crypto.signing import (
    ALGORITHMS,
    ED25519,
    SM2_SM3,
    SignatureError,
    key_id_for,
    verify_signature,
)
from hub.domain.clocks import PolicyError
from hub.domain.errors import PermissionDenied, Unauthenticated
from hub.domain.institutions import HUB_CODE, AlgorithmPolicy
from hub.service.admin import NewKey
from hub.service.commands.case import CREATE_REPORT
from hub.system.policy import SIGNATURE_ALGORITHMS, parse_policy_file
from tests import sm2_reference as ref
from tests.unit.test_handlers import World, account, report_body
from tests.unit.test_leafscan import _can_build

# Skipped only where the binding could not be built (no compiler or headers: the install
# skips it) or this OpenSSL has no SM2; a machine that could build it runs every test, and
# they fail if it was not built.
pytestmark = pytest.mark.skipif(
    sm2.unavailable() is not None and (sm2._native is not None or _can_build() is not None),
    reason=f"no SM2 here: {sm2.unavailable()}",
)

OPENSSL = shutil.which("openssl")
DEFAULT_ID = b"1234567812345678"
C = ref.SM2P256

# GB/T 32918.2-2016 annex A.2: the worked example on the standard's 256-bit test curve.
ANNEX_A = {
    "d": 0x128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263,
    "id": b"ALICE123@YAHOO.COM",
    "message": b"message digest",
    "k": 0x6CB28D99385C175C94F94E934817663FC176D925DD72B727260DBAAE1FB2F96F,
    "x": 0x0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A,
    "y": 0x7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857,
    "z": "f4a38489e32b45b6f876e3ac2168ca392362dc8f23459c1d1146fc3dbfb7bc9a",
    "r": 0x40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1,
    "s": 0x6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7,
}
# The same on the recommended curve with the default ID (GM/T 0003.5-2012's example key).
RECOMMENDED = {
    "d": 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8,
    "message": b"message digest",
    "k": 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21,
    "point": "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020"
    "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13",
    "z": "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3",
    "r": 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3,
    "s": 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA,
}


def test_the_binding_is_built_and_has_sm2() -> None:
    assert sm2.unavailable() is None, (
        f"{sm2.unavailable()}: run `pip install -e .` with -v to see the compiler's error"
    )


# ---- SM3 (GB/T 32905-2016, appendix A) ---------------------------------------------------------

SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]


@pytest.mark.parametrize(("data", "digest"), SM3_VECTORS, ids=["abc", "512-bit"])
def test_sm3_examples_of_the_standard(data: bytes, digest: str) -> None:
    assert sm2.sm3(data).hex() == digest
    assert ref.sm3(data).hex() == digest


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 1000])
def test_sm3_agrees_with_the_reference_across_padding_boundaries(size: int) -> None:
    data = bytes(range(256)) * 4
    assert sm2.sm3(data[:size]) == ref.sm3(data[:size])


# ---- SM2 signatures: the standard's examples ---------------------------------------------------


def test_the_reference_reproduces_annex_a_on_the_test_curve() -> None:
    """GB/T 32918.2 annex A, step by step: the public key, Z_A and (r, s) with its k."""
    c, v = ref.TEST_CURVE, ANNEX_A
    assert c.on_curve(c.gx, c.gy) and ref.mul(c, c.n, (c.gx, c.gy)) is None
    public = ref.public_point(c, v["d"])
    assert public == (v["x"], v["y"])
    assert ref.z_value(c, v["id"], public).hex() == v["z"]
    assert ref.sign(c, v["d"], v["id"], v["message"], v["k"]) == (v["r"], v["s"])
    assert ref.verify(c, public, v["id"], v["message"], v["r"], v["s"])
    assert not ref.verify(c, public, b"ALICE123@YAHOO.CO", v["message"], v["r"], v["s"])


def test_the_recommended_curve_example_verifies_through_openssl() -> None:
    v = RECOMMENDED
    point = bytes.fromhex(v["point"])
    assert ref.encode_point(ref.public_point(C, v["d"])) == point
    assert sm2.Sm2PrivateKey(v["d"].to_bytes(32, "big")).point == point
    assert ref.z_value(C, DEFAULT_ID, ref.public_point(C, v["d"])).hex() == v["z"]
    assert ref.sign(C, v["d"], DEFAULT_ID, v["message"], v["k"]) == (v["r"], v["s"])
    signature = ref.der_signature(v["r"], v["s"])
    assert sm2.verify(point, signature, v["message"])
    assert not sm2.verify(point, signature, b"message digesT")
    # The ID is in Z: the same signature under another ID is another statement.
    assert not sm2.verify(point + b"ALICE123@YAHOO.COM", signature, v["message"])


def test_our_signatures_verify_in_the_reference_and_its_in_ours() -> None:
    key = sm2.Sm2PrivateKey.generate()
    d = int.from_bytes(key.scalar, "big")
    public = ref.public_point(C, d)
    assert ref.encode_point(public) == key.point
    for distinguishing_id in (DEFAULT_ID, b"BANKA@stophub", "银行甲".encode()):
        signer = sm2.Sm2PrivateKey(key.scalar, distinguishing_id)
        message = b"stophub " + distinguishing_id
        r, s = ref.parse_der_signature(signer.sign(message))
        assert ref.verify(C, public, distinguishing_id, message, r, s)
        theirs = ref.der_signature(*ref.sign(C, d, distinguishing_id, message, k=0x1234567 + r))
        assert sm2.verify(signer.record, theirs, message)
        assert not sm2.verify(signer.record, theirs, message + b"!")


def test_signatures_are_randomised_strict_der() -> None:
    key = sm2.Sm2PrivateKey.generate()
    first, second = key.sign(b"x"), key.sign(b"x")
    assert first != second
    assert sm2.verify(key.record, first, b"x") and sm2.verify(key.record, second, b"x")
    r, s = ref.parse_der_signature(first)
    assert ref.der_signature(r, s) == first  # minimal integers, nothing after
    assert not sm2.verify(key.record, first + b"\x00", b"x")
    assert not sm2.verify(key.record, r.to_bytes(32, "big") + s.to_bytes(32, "big"), b"x")
    # A non-minimal INTEGER (a needless 0x00 before r) carries the same r, s: refused.
    if r >> 255 == 0:
        body = b"\x02\x21\x00" + r.to_bytes(32, "big") + ref.der_int(s)
        assert not sm2.verify(key.record, b"\x30" + bytes([len(body)]) + body, b"x")
    assert not sm2.verify(key.record, b"", b"x")
    assert not sm2.verify(key.record, ref.der_signature(r, C.n - s), b"x")


# ---- the key record ----------------------------------------------------------------------------


def test_the_key_record_carries_a_distinguishing_id_other_than_the_default() -> None:
    point = bytes.fromhex(RECOMMENDED["point"])
    assert sm2.make_record(point) == point
    assert sm2.make_record(point, b"ALICE") == point + b"ALICE"
    assert sm2.split_record(point) == (point, DEFAULT_ID)
    assert sm2.split_record(point + b"ALICE") == (point, b"ALICE")
    assert key_id_for(SM2_SM3, point) != key_id_for(SM2_SM3, point + b"ALICE")
    with pytest.raises(SignatureError, match="never written after the point"):
        key_id_for(SM2_SM3, point + DEFAULT_ID)
    with pytest.raises(SignatureError, match="at most 128"):
        key_id_for(SM2_SM3, point + b"x" * 129)
    with pytest.raises(SignatureError, match="uncompressed point"):
        key_id_for(SM2_SM3, b"\x02" + point[1:33])
    off_curve = point[:-1] + bytes([point[-1] ^ 1])
    with pytest.raises(SignatureError, match="malformed"):
        key_id_for(SM2_SM3, off_curve)
    with pytest.raises(sm2.Sm2Error, match="empty"):
        sm2.make_record(point, b"")


def test_a_p256_point_is_not_an_sm2_key() -> None:
    p256 = PrivateKey.generate("ecdsa-p256-sha256").public_key
    # Points of one curve are almost never on the other; if this one is, it is still
    # another key id, since the algorithm is hashed in.
    try:
        sm2.check_public_key(p256)
    except sm2.Sm2Error:
        return
    assert key_id_for(SM2_SM3, p256) != key_id_for("ecdsa-p256-sha256", p256)


# ---- key files ---------------------------------------------------------------------------------


def test_private_and_public_key_files_round_trip() -> None:
    key = PrivateKey.generate("sm2")
    assert key.algorithm == SM2_SM3 and len(key.public_key) == 65
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert PrivateKey.from_pem(pem).key_id == key.key_id
    public = public_key_to_pem(SM2_SM3, key.public_key)
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert public_key_from_pem(public) == (SM2_SM3, key.public_key)
    with_id = PrivateKey.from_pem(pem, distinguishing_id=b"ALICE")
    assert with_id.public_key == key.public_key + b"ALICE"
    # The PEM has no room for the ID: the file of a key with one holds its point.
    assert public_key_to_pem(SM2_SM3, with_id.public_key) == public
    assert with_distinguishing_id(SM2_SM3, key.public_key, "ALICE") == with_id.public_key
    with pytest.raises(SignatureError, match="sm2-sm3 keys only"):
        with_distinguishing_id(ED25519, PrivateKey.generate().public_key, "ALICE")
    with pytest.raises(SignatureError, match="must not be empty"):
        PrivateKey.from_pem(pem, distinguishing_id=b"")
    with pytest.raises(SignatureError, match="SM2 keys only"):
        PrivateKey.from_pem(PrivateKey.generate().to_pem(), distinguishing_id=b"ALICE")


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command on this machine")
def test_openssl_reads_our_key_files_and_we_read_its(tmp_path: Path) -> None:
    assert OPENSSL is not None
    ours = PrivateKey.generate("sm2")
    (tmp_path / "ours.key").write_bytes(ours.to_pem())
    text = _openssl("pkey", "-in", tmp_path / "ours.key", "-pubout")
    assert public_key_from_pem(text.encode()) == (SM2_SM3, ours.public_key)
    _openssl("genpkey", "-algorithm", "SM2", "-out", tmp_path / "theirs.key")
    theirs = load_private_key(tmp_path / "theirs.key")
    assert theirs.algorithm == SM2_SM3
    pub = _openssl("pkey", "-in", tmp_path / "theirs.key", "-pubout")
    assert public_key_from_pem(pub.encode()) == (SM2_SM3, theirs.public_key)


# ---- the openssl command line, both directions ------------------------------------------------


def _openssl(*args: object) -> str:
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))}: {done.stderr or done.stdout}")
    return done.stdout


def _pkeyutl(*args: object) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "pkeyutl", *map(str, args)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command on this machine")
@pytest.mark.parametrize("distinguishing_id", [DEFAULT_ID, b"BANKA@stophub.example"])
def test_openssl_command_line_verifies_ours_and_we_verify_its(
    tmp_path: Path, distinguishing_id: bytes
) -> None:
    """OpenSSL 3.0 takes the ID as `-pkeyopt distid:TEXT` (or `hexdistid:HEX`); without it,
    `pkeyutl` uses none, which is not what GB/T 32918 signers do."""
    key = PrivateKey.from_pem(
        PrivateKey.generate("sm2").to_pem(), distinguishing_id=distinguishing_id
    )
    (tmp_path / "k.key").write_bytes(key.to_pem())
    (tmp_path / "k.pub").write_bytes(public_key_to_pem(SM2_SM3, key.public_key))
    message = Path(__file__).read_bytes()[:1000]  # a signing input is any bytes
    (tmp_path / "msg").write_bytes(message)
    distid = f"distid:{distinguishing_id.decode()}"

    (tmp_path / "ours.sig").write_bytes(key.sign(message))
    common = ["-rawin", "-digest", "sm3", "-in", tmp_path / "msg", "-pkeyopt", distid]
    verified = _pkeyutl(
        "-verify",
        "-pubin",
        "-inkey",
        tmp_path / "k.pub",
        "-sigfile",
        tmp_path / "ours.sig",
        *common,
    )
    assert verified.returncode == 0 and "Verified Successfully" in verified.stdout
    wrong = _pkeyutl(
        "-verify", "-pubin", "-inkey", tmp_path / "k.pub", "-sigfile", tmp_path / "ours.sig",
        "-rawin", "-digest", "sm3", "-in", tmp_path / "msg", "-pkeyopt", "distid:someone-else",
    )  # fmt: skip
    assert wrong.returncode != 0

    signed = _pkeyutl(
        "-sign", "-inkey", tmp_path / "k.key", "-out", tmp_path / "theirs.sig", *common
    )
    assert signed.returncode == 0, signed.stderr
    theirs = (tmp_path / "theirs.sig").read_bytes()
    assert verify_signature(SM2_SM3, key.public_key, theirs, message)
    assert not verify_signature(SM2_SM3, key.public_key, theirs, message + b"x")


# ---- unavailable ------------------------------------------------------------------------------


def test_without_sm2_the_algorithm_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    record = PrivateKey.generate("sm2").public_key
    monkeypatch.setattr(sm2, "_WHY_NOT", "this OpenSSL has no SM2 curve or key type")
    assert SM2_SM3 in ALGORITHMS  # known, so refused as uncheckable rather than unknown
    with pytest.raises(SignatureError, match="not available on this machine: this OpenSSL"):
        verify_signature(SM2_SM3, record, b"0", b"x")
    with pytest.raises(SignatureError, match="not available"):
        PrivateKey.generate("sm2")
    result = CliRunner().invoke(
        main, ["keys", "generate", "--algorithm", "sm2", "--out", "/nonexistent/k.key"]
    )
    assert result.exit_code != 0 and "not available" in result.output


def test_an_openssl_without_sm2_is_reported_not_crashed(tmp_path: Path) -> None:
    """The real thing, not a patch: an OpenSSL whose configuration loads only the `base`
    provider (no SM3, no SM2), as a FIPS-only build would be. The binding imports, says why,
    and sm2-sm3 is refused with that reason."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        "openssl_conf = init\n[init]\nproviders = providers\n"
        "[providers]\nbase = base\n[base]\nactivate = 1\n"
    )
    script = (
        "from hub.crypto import sm2\n"
        "from hub.crypto.signing import SignatureError, verify_signature\n"
        "print(sm2.unavailable())\n"
        "try:\n"
        f"    verify_signature('sm2-sm3', bytes.fromhex({RECOMMENDED['point']!r}), b'0', b'x')\n"
        "except SignatureError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "OPENSSL_CONF": str(conf)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    why, refused = done.stdout.splitlines()
    assert why == "this OpenSSL has no SM3 digest (built without it, or its provider is not loaded)"
    assert refused == f"sm2-sm3 is not available on this machine: {why}"


# ---- the policy file --------------------------------------------------------------------------


def test_the_policy_names_exactly_the_hubs_algorithms() -> None:
    assert set(SIGNATURE_ALGORITHMS) == set(ALGORITHMS)


POLICY_HEAD = (
    '[clocks.x]\nstarts = "report.sent"\nstops = ["report.received"]\nwindow = "1 minute"\n'
    'responsible = "hub"\nladder = ["breach@100%"]\n'
)


def _policy(text: str) -> AlgorithmPolicy:
    full = POLICY_HEAD + text
    return parse_policy_file(tomllib.loads(full), full, "p.toml").signing


def test_the_policy_file_says_which_algorithms_members_may_use() -> None:
    assert _policy("") == AlgorithmPolicy()
    policy = _policy(
        '[signing]\nallowed_algorithms = ["sm2-sm3"]\n\n'
        '[signing.institutions]\nBANKF = ["sm2-sm3", "ed25519"]\n'
    )
    assert policy.allows("BANKA", SM2_SM3) and not policy.allows("BANKA", ED25519)
    assert policy.allows("BANKF", ED25519) and not policy.allows("BANKF", "ecdsa-p256-sha256")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[signing]\nallowed_algorithms = ["sm2"]\n', "line 8: 'sm2' is not a signature algorithm"),
        ("[signing]\nallowed_algorithms = []\n", "line 8: allowed_algorithms is a non-empty list"),
        ('[signing]\nallowed = ["sm2-sm3"]\n', "line 8: unknown key 'allowed'"),
        ('[signing.institutions]\nBANKA = "sm2-sm3"\n', "non-empty list"),
    ],
)
def test_a_bad_signing_policy_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        _policy(text)


# ---- the hub: SM2 members, an SM2 hub key, the network's policy ------------------------------


@pytest.fixture
def w() -> World:
    world = World()
    # The hub signs with SM2 from now on (a rotation; its old key stays valid meanwhile).
    world.hub_key = PrivateKey.generate("sm2")
    world.hub.signer = world.hub_key
    world.registry.add_key(HUB_CODE, NewKey(SM2_SM3, world.hub_key.public_key))
    world.keys["BANKA"] = PrivateKey.generate("sm2")
    world.registry.rotate_key(
        "BANKA", NewKey(SM2_SM3, world.keys["BANKA"].public_key), timedelta(0)
    )
    return world


def test_an_sm2_member_is_answered_by_an_sm2_hub(w: World) -> None:
    envelope = w.seal("BANKA", report_body())
    assert envelope.algorithm == SM2_SM3
    answer = w.hub.handle(CREATE_REPORT, envelope)
    assert answer.algorithm == SM2_SM3 and answer.key_id == w.hub_key.key_id
    assert verify_envelope(answer, w.hub_key.public_key)
    w.open(answer, CREATE_REPORT, "BANKA")


def test_an_sm2_key_with_its_own_distinguishing_id(w: World) -> None:
    key = PrivateKey.from_pem(
        PrivateKey.generate("sm2").to_pem(), distinguishing_id="银行甲-01".encode()
    )
    w.registry.add_key("BANKA", NewKey(SM2_SM3, key.public_key))
    w.open(
        w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body(), key=key)), CREATE_REPORT, "BANKA"
    )
    # The same private key signing under the default ID is another key, unknown here.
    bare = PrivateKey.from_pem(key.to_pem())
    w.refuse(
        CREATE_REPORT, w.seal("BANKA", report_body(), key=bare), Unauthenticated, "UNKNOWN_KEY"
    )


def test_a_revoked_sm2_key_is_refused(w: World) -> None:
    w.registry.revoke_key("BANKA", w.keys["BANKA"].key_id)
    w.refuse(CREATE_REPORT, w.seal("BANKA", report_body()), Unauthenticated, "KEY_REVOKED")


def test_an_sm2_signature_over_other_bytes_is_refused(w: World) -> None:
    envelope = w.seal("BANKA", report_body())
    envelope.body += b"\x00"
    w.refuse(CREATE_REPORT, envelope, Unauthenticated, "BAD_SIGNATURE")
    other = w.seal("BANKA", report_body())
    other.algorithm = ED25519  # the key's algorithm decides, never the envelope's
    w.refuse(CREATE_REPORT, other, Unauthenticated, "ALGORITHM_MISMATCH")


def test_a_network_that_requires_sm2_refuses_other_algorithms(w: World) -> None:
    w.hub.gate.algorithms = AlgorithmPolicy(frozenset({SM2_SM3}))
    w.open(w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body())), CREATE_REPORT, "BANKA")
    err = w.refuse(
        CREATE_REPORT, w.seal("BANKC", report_body()), PermissionDenied, "ALGORITHM_NOT_ALLOWED"
    )
    assert "BANKC" in err.message and "sm2-sm3" in err.message and "ed25519" in err.message


def test_one_institution_may_keep_other_algorithms(w: World) -> None:
    w.hub.gate.algorithms = AlgorithmPolicy(
        frozenset({SM2_SM3}), (("BANKC", frozenset({SM2_SM3, ED25519})),)
    )
    body = report_body(payer=account("BANKC", "6222000000000003", "Zhao Liu"))
    w.open(w.hub.handle(CREATE_REPORT, w.seal("BANKC", body)), CREATE_REPORT, "BANKC")


# ---- our published vectors (docs/signing.md (f) and (g)) ---------------------------------------

SM2_VECTORS = [
    v
    for v in json.loads((Path(__file__).parents[1] / "vectors" / "signing.json").read_text())[
        "vectors"
    ]
    if v["header"]["algorithm"] == SM2_SM3
]


@pytest.mark.parametrize("vector", SM2_VECTORS, ids=lambda v: v["name"])
def test_the_vectors_are_reproduced_with_their_nonce(vector: dict[str, Any]) -> None:
    d = int(vector["private_scalar"], 16)
    distinguishing_id = vector["distinguishing_id"].encode()
    data = bytes.fromhex(vector["signing_input"])
    public = ref.public_point(C, d)
    assert ref.z_value(C, distinguishing_id, public).hex() == vector["z"]
    r, s = ref.sign(C, d, distinguishing_id, data, int(vector["nonce"], 16))
    assert ref.der_signature(r, s).hex() == vector["signature"]
    record = bytes.fromhex(vector["public_key"])
    assert sm2.verify(record, bytes.fromhex(vector["signature"]), data)
    if distinguishing_id != DEFAULT_ID:
        point = ref.encode_point(public)
        assert record == point + distinguishing_id
        assert not sm2.verify(point, bytes.fromhex(vector["signature"]), data)


# ---- an insider with an SM2 key ----------------------------------------------------------------


def test_a_members_sm2_key_signs_only_as_that_member(w: World) -> None:
    mine = PrivateKey.generate("sm2")
    w.registry.add_key("BANKC", NewKey(SM2_SM3, mine.public_key))
    # BANKC names BANKA as the sender, with its own key: not a key of BANKA.
    w.refuse(
        CREATE_REPORT, w.seal("BANKA", report_body(), key=mine), Unauthenticated, "UNKNOWN_KEY"
    )
    # The operator registers, for BANKC, BANKA's SM2 point under another ID. A signature
    # BANKA's key makes (under its own, default ID) over an envelope naming BANKC and that
    # key does not verify: the ID is in Z, so a key record binds its owner's ID.
    stolen = sm2.make_record(w.keys["BANKA"].public_key, b"BANKC")
    w.registry.add_key("BANKC", NewKey(SM2_SM3, stolen))

    class AsStolen:
        algorithm = SM2_SM3
        key_id = key_id_for(SM2_SM3, stolen)

        def sign(self, data: bytes) -> bytes:
            return w.keys["BANKA"].sign(data)

    body = report_body(payer=account("BANKC", "6222000000000003", "Zhao Liu"))
    envelope = seal_message(
        AsStolen(), sender="BANKC", recipient=HUB_CODE, message_id="bankc-stolen",
        create_time=w.clock.now(), message=body,
    )  # fmt: skip
    w.refuse(CREATE_REPORT, envelope, Unauthenticated, "BAD_SIGNATURE")


# ---- the SDK's pinned hub key -----------------------------------------------------------------


def test_the_sdk_reads_an_sm2_hub_key_in_every_form(tmp_path: Path) -> None:
    key = PrivateKey.generate("sm2")
    (tmp_path / "hub.pub").write_bytes(public_key_to_pem(SM2_SM3, key.public_key))
    assert read_hub_key(tmp_path / "hub.pub") == (SM2_SM3, key.public_key)
    assert read_hub_key(key.public_key) == (SM2_SM3, key.public_key)  # a bare SM2 point
    record = sm2.make_record(key.public_key, b"HUB-1")
    assert read_hub_key(record) == (SM2_SM3, record)
    p256 = PrivateKey.generate("ecdsa-p256-sha256").public_key
    assert read_hub_key(p256) == ("ecdsa-p256-sha256", p256)
    with pytest.raises(ValueError, match="hub_public_key"):
        read_hub_key(key.public_key[:-1] + bytes([key.public_key[-1] ^ 1]))
