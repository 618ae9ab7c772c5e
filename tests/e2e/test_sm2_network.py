"""A network that requires SM2, over real gRPC and mutual TLS: the hub signs with SM2, the
Python SDK signs with SM2 keys as with any other, a member still on Ed25519 is refused with
PERMISSION_DENIED / ALGORITHM_NOT_ALLOWED and nothing is stored, and a hub whose own key the
policy does not allow does not start."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubError
from hub.bootstrap import serve
from hub.cli import main
from hub.crypto import sm2
from hub.crypto.keys import PrivateKey, load_private_key
from hub.crypto.public import public_key_to_pem
from hub.crypto.signing import SM2_SM3
from hub.domain.institutions import InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.system.clock import ManualClock
from hub.system.policy import DEFAULT_POLICY
from tests.e2e.conftest import Network, contacts, start_network
from tests.e2e.test_sdk_agent import MULE, report_paying

pytestmark = pytest.mark.skipif(sm2.unavailable() is not None, reason="no SM2 here")


def sm2_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text(encoding="utf-8")
        + '\n[signing]\nallowed_algorithms = ["sm2-sm3"]\n\n'
        + '[signing.institutions]\nLEGACY = ["sm2-sm3", "ed25519"]\n',
        encoding="utf-8",
    )
    return policy


@pytest.fixture
async def sm2_network(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Network]:
    net = await start_network(
        tmp_path,
        clock,
        hub_key=PrivateKey.generate("sm2"),
        algorithm=SM2_SM3,
        policy_file=sm2_policy(tmp_path),
    )
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


def report(network: Network) -> object:
    now = network.clock.now()
    return report_paying(MULE, [(now - timedelta(minutes=20), 3_000_000)], now)


async def test_sm2_members_and_an_sm2_hub(sm2_network: Network, tmp_path: Path) -> None:
    net = sm2_network
    assert net.hub_key.algorithm == SM2_SM3
    # The member pins the hub's key from the PEM the operator publishes.
    (tmp_path / "hub.pub").write_bytes(public_key_to_pem(SM2_SM3, net.hub_key.public_key))
    async with net.client("BANKA", hub_public_key=tmp_path / "hub.pub") as banka:
        case = await banka.create_report(report(net))  # type: ignore[arg-type]
        verified = await banka.verify_report(case.case_id)
        assert verified.case_id == case.case_id
        found = await banka.get_institution("BANKA")
        [key] = found.keys
        assert (key.algorithm, key.key_id) == (SM2_SM3, net.keys["BANKA"].key_id)
        assert key.public_key == net.keys["BANKA"].public_key
    # The audit log's signed messages, SM2 all, verify with the keys valid when recorded.
    out = _run("audit", "signatures", "--db", net.database_url)
    assert " 0 problem(s)" in out and "BANKA" in out, out


async def test_a_member_with_its_own_distinguishing_id(sm2_network: Network) -> None:
    net = sm2_network
    key = PrivateKey.from_pem(PrivateKey.generate("sm2").to_pem(), distinguishing_id=b"BANKA-01")
    Registry(net.store, net.clock).rotate_key(
        "BANKA", NewKey(SM2_SM3, key.public_key), timedelta(0)
    )
    async with net.client("BANKA", key=key) as banka:
        case = await banka.create_report(report(net))  # type: ignore[arg-type]
        assert case.case_id


async def test_a_member_on_ed25519_is_refused_and_nothing_is_stored(sm2_network: Network) -> None:
    net = sm2_network
    registry = Registry(net.store, net.clock)
    old = PrivateKey.generate()
    registry.add_key("BANKA", NewKey(old.algorithm, old.public_key))  # registering is not refused
    async with net.client("BANKA", key=old) as banka:
        with pytest.raises(HubError) as refused:
            await banka.create_report(report(net))  # type: ignore[arg-type]
        err = refused.value
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        assert err.reason == "ALGORITHM_NOT_ALLOWED"
        assert "sm2-sm3" in err.message and "ed25519" in err.message
    async with net.client("BANKA") as banka:
        assert await banka.list_cases() == []


async def test_one_institution_may_keep_ed25519(sm2_network: Network) -> None:
    net = sm2_network
    key = PrivateKey.generate()
    Registry(net.store, net.clock).add_institution(
        "LEGACY",
        "Legacy Bank",
        InstitutionKind.BANK,
        [NewKey(key.algorithm, key.public_key)],
        contacts("LEGACY"),
    )
    net.keys["LEGACY"] = key
    async with net.client("LEGACY") as legacy:
        found = await legacy.get_institution("LEGACY")
        assert found.code == "LEGACY"


async def test_the_hub_does_not_start_with_a_key_the_policy_forbids(
    tmp_path: Path, clock: ManualClock
) -> None:
    with pytest.raises(ValueError, match="is ed25519, which the policy's \\[signing\\]"):
        await serve(
            f"sqlite:///{tmp_path}/hub.db",
            PrivateKey.generate(),
            "127.0.0.1:0",
            clock=clock,
            policy_file=sm2_policy(tmp_path),
        )


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_keys_commands_handle_sm2_keys(tmp_path: Path) -> None:
    """generate --algorithm sm2, register, add with a distinguishing ID, rotate, revoke."""
    db = f"sqlite:///{tmp_path}/cli.db"
    out = _run("keys", "generate", "--algorithm", "sm2", "--out", str(tmp_path / "banka.key"))
    assert "(sm2-sm3)" in out
    key_id = out.split("key id")[1].split()[0]
    key = load_private_key(tmp_path / "banka.key")
    assert (key.algorithm, key.key_id) == (SM2_SM3, key_id)
    assert (tmp_path / "banka.pub").read_bytes() == public_key_to_pem(SM2_SM3, key.public_key)
    _run(
        "institution", "add", "--code", "BANKA", "--name", "Bank A", "--kind", "bank",
        "--key", str(tmp_path / "banka.pub"), "--primary", "Wang Li,+86-10-1",
        "--backup", "Zhao Min,+86-10-2", "--db", db,
    )  # fmt: skip
    out = _run(
        "keys", "add", "BANKA", "--key", str(tmp_path / "banka.pub"),
        "--distinguishing-id", "BANKA@example.cn", "--db", db,
    )  # fmt: skip
    with_id = PrivateKey.from_pem(key.to_pem(), distinguishing_id=b"BANKA@example.cn")
    assert f"added key {with_id.key_id}" in out and with_id.key_id != key_id
    _run("keys", "generate", "--algorithm", "sm2-sm3", "--out", str(tmp_path / "banka2.key"))
    out = _run(
        "keys", "rotate", "BANKA", "--key", str(tmp_path / "banka2.pub"), "--overlap-hours",
        "0", "--db", db,
    )  # fmt: skip
    assert key_id in out and with_id.key_id in out
    _run("keys", "revoke", "BANKA", key_id, "--db", db)
    shown = json.loads(_run("institution", "show", "BANKA", "--json", "--db", db))
    states = {k["key_id"]: (k["algorithm"], k["state"]) for k in shown["keys"]}
    assert states[key_id] == (SM2_SM3, "revoked")
    assert states[with_id.key_id] == (SM2_SM3, "active")
    # An ID for another algorithm, an empty or a too long one is refused, as exit 2.
    _run("keys", "generate", "--out", str(tmp_path / "ed.key"))
    for key_file, distinguishing_id in (
        ("ed.pub", "X"),
        ("banka.pub", ""),
        ("banka.pub", "x" * 129),
    ):
        refused = CliRunner().invoke(
            main,
            ["keys", "add", "BANKA", "--key", str(tmp_path / key_file),
             "--distinguishing-id", distinguishing_id, "--db", db],
        )  # fmt: skip
        assert refused.exit_code == 2, refused.output
        assert "--distinguishing-id" in refused.output
