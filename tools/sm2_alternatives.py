"""The SM2 implementations ADR 23 compared, measured and checked the same way.

Not part of the hub: the candidates it imports are not dependencies. Run it in a scratch
virtual environment that has them, with the repository on the path:

    python3 -m venv /tmp/sm2-alt && /tmp/sm2-alt/bin/pip install gmssl snowland-smx gmssl-fast
    PYTHONPATH=$(ls -d /tmp/sm2-alt/lib/python3*/site-packages) .venv/bin/python \\
        tools/sm2_alternatives.py

For each: does it verify GM/T 0003.5's recommended-curve example and our envelope vector (f)
(default ID), can it sign and verify under another distinguishing ID (vector (g)), do its
signatures verify with the hub's binding (hub/crypto/_sm2.c) and the binding's with it, and
signs and verifications per second of CPU time over a 700-byte input.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.crypto import sm2  # noqa: E402
from tests import sm2_reference as ref  # noqa: E402

DEFAULT_ID = b"1234567812345678"
D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
EXAMPLE_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
EXAMPLE_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
VECTORS = {
    v["name"]: v
    for v in json.loads((ROOT / "tests/vectors/signing.json").read_text())["vectors"]
    if v["header"]["algorithm"] == "sm2-sm3"
}


def rate(op: Callable[[], object], seconds: float = 2.0) -> float:
    op()
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        op()
        count += 1
    return count / (time.process_time() - start)


_POINTS: dict[int, bytes] = {}


def point_of(d: int) -> bytes:
    # Derived once: the reference's pure-Python point multiplication is not what is measured.
    if d not in _POINTS:
        _POINTS[d] = ref.encode_point(ref.public_point(ref.SM2P256, d))
    return _POINTS[d]


def raw(der: bytes) -> bytes:
    r, s = ref.parse_der_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der(rs: bytes) -> bytes:
    return ref.der_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))


class Candidate:
    name = ""
    supports_id = False

    def sign(self, d: int, data: bytes, uid: bytes) -> bytes:  # DER
        raise NotImplementedError

    def verify(self, point: bytes, sig: bytes, data: bytes, uid: bytes) -> bool:
        raise NotImplementedError


class OpenSslBinding(Candidate):
    name = "hub/crypto/_sm2.c (OpenSSL 3 EVP)"
    supports_id = True

    def __init__(self) -> None:
        self.keys: dict[tuple[int, bytes], sm2.Sm2PrivateKey] = {}

    def sign(self, d: int, data: bytes, uid: bytes) -> bytes:
        key = self.keys.get((d, uid))
        if key is None:
            key = self.keys[d, uid] = sm2.Sm2PrivateKey(d.to_bytes(32, "big"), uid)
        return key.sign(data)

    def verify(self, point: bytes, sig: bytes, data: bytes, uid: bytes) -> bool:
        return sm2.verify(sm2.make_record(point, uid), sig, data)


class Gmssl(Candidate):
    name = "gmssl 3.2.2 (pure Python)"

    def __init__(self) -> None:
        from gmssl import sm2 as g

        self.g = g

    def _crypt(self, d: int | None, point: bytes) -> Any:
        return self.g.CryptSM2(
            private_key=None if d is None else f"{d:064x}", public_key=point[1:].hex()
        )

    def sign(self, d: int, data: bytes, uid: bytes) -> bytes:
        assert uid == DEFAULT_ID, "gmssl hard-codes the default ID"
        k = os.urandom(32).hex()
        return der(bytes.fromhex(self._crypt(d, point_of(d)).sign_with_sm3(data, k)))

    def verify(self, point: bytes, sig: bytes, data: bytes, uid: bytes) -> bool:
        assert uid == DEFAULT_ID, "gmssl hard-codes the default ID"
        return bool(self._crypt(None, point).verify_with_sm3(raw(sig).hex(), data))


class Pysmx(Candidate):
    name = "snowland-smx 1.1.0 (pysmx, pure Python)"
    supports_id = True

    def __init__(self) -> None:
        from pysmx import SM2 as s

        self.s = s

    def sign(self, d: int, data: bytes, uid: bytes) -> bytes:
        # The caller draws k: the API hands the nonce, and its reuse, to every caller.
        k = f"{int.from_bytes(os.urandom(32), 'big') % (ref.SM2P256.n - 1) + 1:064x}"
        return der(self.s.Sign(data, f"{d:064x}", k, 64, uid=uid))

    def verify(self, point: bytes, sig: bytes, data: bytes, uid: bytes) -> bool:
        return bool(self.s.Verify(raw(sig), data, point[1:].hex(), 64, uid=uid))


class GmsslFast(Candidate):
    name = "gmssl-fast 0.1.0 (GmSSL, static)"

    def __init__(self) -> None:
        import gmssl_fast

        self.m = gmssl_fast

    def sign(self, d: int, data: bytes, uid: bytes) -> bytes:
        assert uid == DEFAULT_ID, "gmssl-fast takes no ID"
        key = self.m.SM2(private_key=f"{d:064x}", public_key=point_of(d).hex())
        return der(key.sign(data))

    def verify(self, point: bytes, sig: bytes, data: bytes, uid: bytes) -> bool:
        assert uid == DEFAULT_ID, "gmssl-fast takes no ID"
        return bool(self.m.SM2(public_key=point.hex()).verify(data, raw(sig)))


def check(c: Candidate) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name}
    point = point_of(D)
    example = ref.der_signature(EXAMPLE_R, EXAMPLE_S)

    def attempt(what: str, fn: Callable[[], bool]) -> None:
        try:
            out[what] = bool(fn())
        except Exception as exc:  # a candidate that cannot do it says so
            out[what] = f"no: {type(exc).__name__}: {exc}"[:90]

    attempt("GM/T 0003.5 example", lambda: c.verify(point, example, b"message digest", DEFAULT_ID))
    f, g = VECTORS["sm2-sm3-basic"], VECTORS["sm2-sm3-distinguishing-id"]
    for v in (f, g):
        attempt(
            f"vector {v['name']}",
            lambda v=v: c.verify(
                point,
                bytes.fromhex(v["signature"]),
                bytes.fromhex(v["signing_input"]),
                v["distinguishing_id"].encode(),
            ),
        )
    data = os.urandom(700)
    binding = OpenSslBinding()
    attempt(
        "its signature verifies in the binding",
        lambda: binding.verify(point, c.sign(D, data, DEFAULT_ID), data, DEFAULT_ID),
    )
    attempt(
        "the binding's verifies in it",
        lambda: c.verify(point, binding.sign(D, data, DEFAULT_ID), data, DEFAULT_ID),
    )
    attempt(
        "wrong data refused",
        lambda: not c.verify(point, binding.sign(D, data, DEFAULT_ID), data + b"x", DEFAULT_ID),
    )
    try:
        sig = c.sign(D, data, DEFAULT_ID)
        out["sign/s"] = rate(lambda: c.sign(D, data, DEFAULT_ID))
        out["verify/s"] = rate(lambda: c.verify(point, sig, data, DEFAULT_ID))
    except Exception as exc:
        out["speed"] = f"{type(exc).__name__}: {exc}"
    return out


def main() -> int:
    makers: list[Callable[[], Candidate]] = [OpenSslBinding, Gmssl, Pysmx, GmsslFast]
    for make in makers:
        try:
            candidate = make()
        except ImportError as exc:
            print(f"- {make.name}: not installed ({exc})")
            continue
        result = check(candidate)
        print(json.dumps(result, ensure_ascii=False, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
