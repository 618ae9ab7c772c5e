"""SM3 and SM2 signatures written out from the standards (GB/T 32905, GB/T 32918.2), in
plain Python and slowly: the tests' independent check of hub/crypto/_sm2.c, which goes
through OpenSSL. It can sign with a given k, which is what the standards' worked examples
and our published envelope vectors need; the hub never does (its k comes from OpenSSL).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ---- SM3 (GB/T 32905-2016) -----------------------------------------------------------------

_IV = (
    0x7380166F,
    0x4914B2B9,
    0x172442D7,
    0xDA8A0600,
    0xA96F30BC,
    0x163138AA,
    0xE38DEE4D,
    0xB0FB0E4E,
)
_M32 = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    n %= 32
    return ((x << n) | (x >> (32 - n))) & _M32


def _p0(x: int) -> int:
    return x ^ _rotl(x, 9) ^ _rotl(x, 17)


def _p1(x: int) -> int:
    return x ^ _rotl(x, 15) ^ _rotl(x, 23)


def _compress(v: list[int], block: bytes) -> list[int]:
    w = list(struct.unpack(">16I", block))
    for j in range(16, 68):
        w.append(_p1(w[j - 16] ^ w[j - 9] ^ _rotl(w[j - 3], 15)) ^ _rotl(w[j - 13], 7) ^ w[j - 6])
    w1 = [w[j] ^ w[j + 4] for j in range(64)]
    a, b, c, d, e, f, g, h = v
    for j in range(64):
        t = 0x79CC4519 if j < 16 else 0x7A879D8A
        ss1 = _rotl((_rotl(a, 12) + e + _rotl(t, j)) & _M32, 7)
        ss2 = ss1 ^ _rotl(a, 12)
        if j < 16:
            ff, gg = a ^ b ^ c, e ^ f ^ g
        else:
            ff, gg = (a & b) | (a & c) | (b & c), (e & f) | (~e & g)
        tt1 = (ff + d + ss2 + w1[j]) & _M32
        tt2 = (gg + h + ss1 + w[j]) & _M32
        a, b, c, d = tt1, a, _rotl(b, 9), c
        e, f, g, h = _p0(tt2), e, _rotl(f, 19), g
    return [x ^ y for x, y in zip((a, b, c, d, e, f, g, h), v, strict=True)]


def sm3(data: bytes) -> bytes:
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack(">Q", len(data) * 8)
    v = list(_IV)
    for i in range(0, len(padded), 64):
        v = _compress(v, padded[i : i + 64])
    return struct.pack(">8I", *v)


# ---- SM2 signatures (GB/T 32918.2-2016) ---------------------------------------------------


@dataclass(frozen=True)
class Curve:
    p: int
    a: int
    b: int
    n: int
    gx: int
    gy: int

    def on_curve(self, x: int, y: int) -> bool:
        return (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0


# The recommended curve (GB/T 32918.5-2017), the one `sm2-sm3` uses.
SM2P256 = Curve(
    p=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    a=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    b=0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    n=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
    gx=0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    gy=0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
)

# The 256-bit test curve of GB/T 32918.2-2016 annex A (its worked example uses it).
TEST_CURVE = Curve(
    p=0x8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3,
    a=0x787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498,
    b=0x63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A,
    n=0x8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7,
    gx=0x421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D,
    gy=0x0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2,
)

Point = tuple[int, int] | None  # None is the point at infinity


def add(c: Curve, p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % c.p == 0:
        return None
    if p1 == p2:
        lam = (3 * x1 * x1 + c.a) * pow(2 * y1, -1, c.p) % c.p
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, c.p) % c.p
    x3 = (lam * lam - x1 - x2) % c.p
    return x3, (lam * (x1 - x3) - y1) % c.p


def mul(c: Curve, k: int, point: Point) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = add(c, result, point)
        point = add(c, point, point)
        k >>= 1
    return result


def _b32(x: int) -> bytes:
    return x.to_bytes(32, "big")


def public_point(c: Curve, d: int) -> tuple[int, int]:
    point = mul(c, d, (c.gx, c.gy))
    assert point is not None
    return point


def encode_point(point: tuple[int, int]) -> bytes:
    return b"\x04" + _b32(point[0]) + _b32(point[1])


def z_value(c: Curve, distinguishing_id: bytes, public: tuple[int, int]) -> bytes:
    entl = struct.pack(">H", len(distinguishing_id) * 8)
    return sm3(
        entl
        + distinguishing_id
        + b"".join(_b32(v) for v in (c.a, c.b, c.gx, c.gy, public[0], public[1]))
    )


def sign(c: Curve, d: int, distinguishing_id: bytes, message: bytes, k: int) -> tuple[int, int]:
    """(r, s) with the given k, exactly as GB/T 32918.2 section 6.1 computes them."""
    e = int.from_bytes(sm3(z_value(c, distinguishing_id, public_point(c, d)) + message), "big")
    kg = mul(c, k, (c.gx, c.gy))
    assert kg is not None
    r = (e + kg[0]) % c.n
    if r == 0 or r + k == c.n:
        raise ValueError("this k gives r = 0 or r + k = n: choose another")
    s = pow(1 + d, -1, c.n) * (k - r * d) % c.n
    if s == 0:
        raise ValueError("this k gives s = 0: choose another")
    return r, s


def verify(
    c: Curve, public: tuple[int, int], distinguishing_id: bytes, message: bytes, r: int, s: int
) -> bool:
    if not (1 <= r < c.n and 1 <= s < c.n):
        return False
    e = int.from_bytes(sm3(z_value(c, distinguishing_id, public) + message), "big")
    t = (r + s) % c.n
    if t == 0:
        return False
    point = add(c, mul(c, s, (c.gx, c.gy)), mul(c, t, public))
    return point is not None and (e + point[0]) % c.n == r


def der_int(x: int) -> bytes:
    raw = x.to_bytes((x.bit_length() + 8) // 8, "big")  # room for a 0x00 before a high bit
    return b"\x02" + bytes([len(raw)]) + raw


def der_signature(r: int, s: int) -> bytes:
    body = der_int(r) + der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def parse_der_signature(der: bytes) -> tuple[int, int]:
    assert der[0] == 0x30 and der[1] == len(der) - 2
    values = []
    i = 2
    for _ in range(2):
        assert der[i] == 0x02
        length = der[i + 1]
        values.append(int.from_bytes(der[i + 2 : i + 2 + length], "big"))
        i += 2 + length
    assert i == len(der)
    return values[0], values[1]
