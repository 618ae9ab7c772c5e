"""SM2 benchmark: `sm2-sm3` signatures against Ed25519 in the same run, alone and at intake.

`python -m bench sm2` (or `python -m bench.sm2`):

- sign and verify per second, one core, over a 700-byte signing input (a CreateReport's
  size), through the hub's own paths: `PrivateKey.sign` and `verify_signature` (which for
  SM2 is hub/crypto/_sm2.c over OpenSSL's EVP, with the parsed public key cached as the hub
  verifies with it). Baseline: the same for Ed25519 (`cryptography`, also OpenSSL), measured
  in the same minute; ECDSA P-256 is a second reference row;
- intake (bench/intake.py's machinery, unchanged): signed CreateReports per second through a
  `stophub serve` child process over mutual TLS, BANKA's envelopes and the hub's answers in
  `sm2-sm3`, against the same run with Ed25519 right before it, on the same database kind.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence

from bench import intake
from bench.table import Row, standalone
from hub.crypto import fields, sm2
from hub.crypto.keys import PrivateKey
from hub.crypto.signing import ECDSA_P256, ED25519, SM2_SM3, verify_signature

INPUT_SIZE = 700


def _rate(op: Callable[[], object], seconds: float) -> float:
    """Calls per second of `op`, measured in batches for `seconds` of process CPU time (so a
    neighbour on the shared machine slows the wall clock, not the figure)."""
    op()  # warm: caches, lazy fetches
    count, batch = 0, 16
    start = time.process_time()
    while (spent := time.process_time() - start) < seconds:
        for _ in range(batch):
            op()
        count += batch
        if spent < seconds / 10:
            batch *= 2
    return count / (time.process_time() - start)


def signature_rates(seconds: float) -> dict[str, tuple[float, float]]:
    """{algorithm: (signs per second, verifications per second)} on one core."""
    data = os.urandom(INPUT_SIZE)
    rates = {}
    for algorithm in (ED25519, SM2_SM3, ECDSA_P256):
        key = PrivateKey.generate(algorithm)
        signature = key.sign(data)
        public = key.public_key
        assert verify_signature(algorithm, public, signature, data)
        signs = _rate(functools.partial(key.sign, data), seconds)
        verifies = _rate(
            functools.partial(verify_signature, algorithm, public, signature, data), seconds
        )
        rates[algorithm] = (signs, verifies)
    return rates


def rows(args: argparse.Namespace) -> list[Row]:
    why_not = sm2.unavailable()
    if why_not is not None:
        print(f"sm2: skipped: {why_not}", flush=True)
        return []
    quick = bool(getattr(args, "quick", False))
    seconds = getattr(args, "sm2_seconds", None) or (1.0 if quick else 5.0)
    rates = signature_rates(seconds)
    ed_sign, ed_verify = rates[ED25519]
    out = []
    for algorithm, label in ((SM2_SM3, "SM2 with SM3 (OpenSSL EVP)"), (ECDSA_P256, "P-256")):
        signs, verifies = rates[algorithm]
        out.append(
            Row(
                "sm2",
                f"{label} signatures/s, one core, {INPUT_SIZE} B",
                signs,
                "/s",
                "Ed25519, same input",
                ed_sign,
                True,
            )
        )
        out.append(
            Row(
                "sm2",
                f"{label} verifications/s, one core, {INPUT_SIZE} B",
                verifies,
                "/s",
                "Ed25519, same input",
                ed_verify,
                True,
            )
        )
    out += intake_rows(args, quick)
    return out


def intake_rows(args: argparse.Namespace, quick: bool) -> list[Row]:
    """Intake with SM2 envelopes against intake with Ed25519, run right before it."""
    values = {
        **vars(args),
        "algorithm": None,
        "concurrency": getattr(args, "sm2_concurrency", None) or [16],
        "seconds": getattr(args, "sm2_intake_seconds", None) or (3.0 if quick else 10.0),
        "plaintext": False,
        "profile": None,
    }
    runs = {}
    given = os.environ.get(fields.ENV_FILE)
    for algorithm in (ED25519, SM2_SM3):
        values["algorithm"] = algorithm
        try:
            runs[algorithm] = intake.measure(intake._with_defaults(argparse.Namespace(**values)))
        finally:
            # intake makes a keyring in its run's directory and names it in the environment
            # when none was given; that directory is gone now, so the next run makes its own.
            if given is None:
                os.environ.pop(fields.ENV_FILE, None)
    out = []
    for ed, sm in zip(runs[ED25519], runs[SM2_SM3], strict=True):
        where = f"{sm.database}, {sm.concurrency} in flight"
        invalid = " INVALID" if sm.hub.errors or ed.hub.errors else ""
        out.append(
            Row(
                "sm2",
                f"intake reports/s, sm2-sm3 envelopes and answers, {where}{invalid}",
                sm.hub.rate,
                "req/s",
                "the same with Ed25519, same run",
                ed.hub.rate,
                True,
            )
        )
        out.append(
            Row(
                "sm2",
                f"intake p99, sm2-sm3, {where}{invalid}",
                sm.hub.p(99) * 1e3,
                "ms",
                "the same with Ed25519",
                ed.hub.p(99) * 1e3,
                False,
            )
        )
        out.append(
            Row(
                "sm2",
                f"intake server CPU per request, sm2-sm3, {where}{invalid}",
                sm.cpu_per_request("hub") * 1e3,
                "ms",
                "the same with Ed25519",
                ed.cpu_per_request("hub") * 1e3,
                False,
            )
        )
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sm2")
    g.add_argument(
        "--sm2-seconds", type=float, help="CPU seconds per sign/verify figure (default 5; 1 quick)"
    )
    g.add_argument(
        "--sm2-intake-seconds", type=float, help="timed seconds per intake run (default 10)"
    )
    g.add_argument(
        "--sm2-concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        help="intake requests in flight, comma-separated (default 16)",
    )


def main(argv: Sequence[str]) -> int:
    return standalone(argv, "python -m bench.sm2", __doc__ or "", add_arguments, rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
