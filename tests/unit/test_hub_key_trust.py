"""Which hub keys an auditor trusts (hub/service/trust.py, docs/audit.md "Rotating the hub's
key"): the keys given, and keys endorsed by a chain of signatures from one of them, in any
order stored; nothing else, whatever a row claims."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hub.crypto.keys import PrivateKey
from hub.service import trust
from hub.service.ports import HubKeyEndorsementRow
from tests.conftest import T0

A, B, C, D = (PrivateKey.generate() for _ in range(4))


def endorse(old: PrivateKey, new: PrivateKey, minutes: int = 0) -> HubKeyEndorsementRow:
    return trust.endorse(old, new.algorithm, new.public_key, T0 + timedelta(minutes=minutes))


def test_a_chain_stored_in_any_order_extends_the_keys_given() -> None:
    rows = [endorse(B, C, 2), endorse(A, B, 1)]  # C's endorsement before B's is trusted
    keys = trust.trusted_keys({A.key_id: A.public_key}, rows)
    assert keys.get(C.key_id) == C.public_key and keys.get(B.key_id) == B.public_key
    assert sorted(keys.endorsed) == sorted([B.key_id, C.key_id]) and keys.findings == []
    # Trust runs forward only: given C, A and B are not trusted.
    only_c = trust.trusted_keys({C.key_id: C.public_key}, rows)
    assert only_c.get(A.key_id) is None and only_c.get(B.key_id) is None
    assert {f.what for f in only_c.findings} == {"endorsement"} and len(only_c.findings) == 2


def test_an_endorsement_that_claims_a_trusted_signer_but_is_not_signed_by_it_is_a_finding() -> None:
    class Posing:
        algorithm, key_id = D.algorithm, A.key_id

        @staticmethod
        def sign(data: bytes) -> bytes:
            return D.sign(data)

    forged = trust.endorse(Posing(), D.algorithm, D.public_key, T0)
    keys = trust.trusted_keys({A.key_id: A.public_key}, [forged])
    assert keys.get(D.key_id) is None
    [finding] = keys.findings
    assert finding.what == "endorsement" and "does not verify under hub key" in finding.detail


def test_a_row_that_disagrees_with_what_it_signs_vouches_for_nothing() -> None:
    row = endorse(A, B)
    for bent in (
        replace(row, key_id=C.key_id),
        replace(row, endorsed_by=D.key_id),
        replace(row, endorsed_at=T0 + timedelta(days=1)),
        replace(row, envelope=b"\x00garbage"),
    ):
        keys = trust.trusted_keys({A.key_id: A.public_key}, [bent])
        assert keys.get(B.key_id) is None and keys.get(C.key_id) is None
        assert [f.what for f in keys.findings] == ["endorsement"], bent
