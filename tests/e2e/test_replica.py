"""A platform's copy of the blacklist against a real hub: the replica (adapters/blacklist) syncs
as PAYX, follows what the centre publishes and removes, matches tokens with the network's list
key, and `stophub replica --once` does the same from the command line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from adapters.blacklist import Form, ListKeyMismatch, Replica, VersionNotIssued
from adapters.sdk import HubClient
from hub.cli import main
from hub.crypto import pki
from hub.crypto.keys import save_private_key
from hub.crypto.listkey import ListKey
from hub.crypto.public import public_key_to_pem
from stophub.v1 import account_pb2, blacklist_pb2, case_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report
from tests.support import Watch

REPO = Path(__file__).resolve().parents[2]
TRADER = blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER
CONVICTED = blacklist_pb2.LIST_BASIS_CONVICTED
MULE = ("BANKB", "6222020000000002", "Li Si")
WALLET = ("PAYX", "W-88000001", "Wang Wu")
CONVICT = ("11010519491231002X", "Zhao Liu")


async def open_case(clients: dict[str, HubClient], network: Network) -> case_pb2.Case:
    case = await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    return await clients["BANKA"].verify_report(case.case_id, confirmed=True)


@contextlib.asynccontextmanager
async def following(replica: Replica) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(replica.run(follow=True, initial_backoff=0.05, max_backoff=0.5))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_replica_syncs_follows_and_proves_itself_against_the_hub(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    centre, payx = clients["CENTRE"], clients["PAYX"]
    case = await open_case(clients, network)
    mule = await centre.publish_list_entry(
        account=MULE, basis=TRADER, reason="sold the account", source_case_id=case.case_id
    )
    convict = await centre.publish_list_entry(
        person=CONVICT, basis=CONVICTED, reason="convicted", source_case_id=case.case_id
    )

    with Replica(tmp_path / "payx-list.db", payx, Form.CLEAR, clock=network.clock) as replica:
        status = await replica.sync_once()
        assert (status.version, status.entry_count) == (2, 2)
        found = replica.is_listed_account("bankb", "6222020000000002")
        assert found is not None and found.entry_id == mule.entry.entry_id
        assert found.expires_at == mule.entry.expire_time.ToDatetime(tzinfo=UTC)
        person = replica.is_listed_person("11010519491231002x")
        assert person is not None and person.entry_id == convict.entry.entry_id
        assert replica.is_listed_account("PAYX", "W-88000001") is None
        assert replica.verify_local().ok

        # Following: what the centre publishes or removes arrives by itself.
        watch = Watch(replica)
        async with following(replica) as task:
            wallet = await centre.publish_list_entry(
                account=WALLET, basis=TRADER, reason="rented out", source_case_id=case.case_id
            )
            await watch.until(lambda: replica.version >= 3)
            listed = replica.is_listed_account("PAYX", "W-88000001")
            assert listed is not None and listed.entry_id == wallet.entry.entry_id
            await centre.remove_list_entry(mule.entry.entry_id, "a mistake: not the mule")
            await watch.until(lambda: replica.version >= 4)
            assert replica.is_listed_account("BANKB", "6222020000000002") is None
            assert replica.entry_count == 2 and replica.lag.versions == 0
            assert not task.done()
        assert all(e.kind == "checkpoint" for e in watch.events), watch.events
        assert replica.verify_local().ok

        # The hub's own answer agrees with the copy.
        check = await payx.check_list(
            [
                blacklist_pb2.ListSubject(
                    account=account_pb2.AccountRef(
                        institution_code="PAYX", account_number="W-88000001"
                    )
                ),
                blacklist_pb2.ListSubject(
                    account=account_pb2.AccountRef(
                        institution_code="BANKB", account_number="6222020000000002"
                    )
                ),
            ]
        )
        assert [h.listed for h in check.hits] == [True, False] and check.version == 4
        digest = replica.digest

    # A restart resumes from the copy's version.
    with Replica(tmp_path / "payx-list.db", payx, Form.CLEAR, clock=network.clock) as again:
        assert (again.version, again.digest) == (4, digest)
        await centre.publish_list_entry(
            account=("BANKA", "6222010000000077", "Qian Ba"),
            basis=TRADER,
            reason="sold the account",
            source_case_id=case.case_id,
        )
        assert (await again.sync_once()).version == 5
        assert again.entry_count == 3


async def test_a_tokens_replica_matches_customers_by_their_tokens(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    assert network.list_key is not None
    centre, payx = clients["CENTRE"], clients["PAYX"]
    case = await open_case(clients, network)
    mule = await centre.publish_list_entry(
        account=MULE, basis=TRADER, reason="sold the account", source_case_id=case.case_id
    )
    path = tmp_path / "tokens.db"
    with Replica(path, payx, Form.TOKENS, list_key=network.list_key, clock=network.clock) as r:
        assert (await r.sync_once()).entry_count == 1
        found = r.is_listed_account("BANKB", "6222020000000002")
        assert found is not None and found.entry_id == mule.entry.entry_id and found.name == ""
        assert r.is_listed_account("BANKB", "6222020000000003") is None
    raw = files_of(tmp_path, "tokens.db")
    assert b"6222020000000002" not in raw and b"Li Si" not in raw

    # Another key than the network's: refused, never a silently wrong copy.
    other = tmp_path / "other.db"
    with Replica(other, payx, Form.TOKENS, list_key=ListKey.generate(), clock=network.clock) as r:
        with pytest.raises(ListKeyMismatch, match=network.list_key.key_id):
            await r.sync_once()
        assert r.version == 0 and r.entries() == []


async def test_a_copy_ahead_of_the_hub_is_kept_until_a_snapshot_replaces_it(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    centre, payx = clients["CENTRE"], clients["PAYX"]
    case = await open_case(clients, network)
    await centre.publish_list_entry(
        account=MULE, basis=TRADER, reason="sold the account", source_case_id=case.case_id
    )
    path = tmp_path / "ahead.db"
    with Replica(path, payx, Form.CLEAR, clock=network.clock) as r:
        await r.sync_once()
    with closing(sqlite3.connect(path)) as db, db:  # a copy from another network, say
        db.execute("UPDATE state SET version = 99")
    with Replica(path, payx, Form.CLEAR, clock=network.clock) as r:
        with pytest.raises(VersionNotIssued, match="never issued version 99") as refused:
            await r.sync_once()
        assert refused.value.error.signed, "the hub's signed refusal"
        assert r.version == 99 and r.is_listed_account("BANKB", "6222020000000002") is not None
        status = await r.sync_once()
        assert (status.version, status.entry_count) == (1, 1) and r.verify_local().ok


def files_of(directory: Path, name: str) -> bytes:
    """The database file and its WAL, as bytes."""
    return b"".join(f.read_bytes() for f in sorted(directory.glob(f"{name}*")))


def member_files(network: Network, code: str, directory: Path) -> list[str]:
    """`code`'s signing key, the hub's public key and a TLS directory, as files; the
    options `stophub replica` takes for them."""
    directory.mkdir(parents=True, exist_ok=True)
    save_private_key(network.keys[code], directory / f"{code.lower()}.key")
    hub_pub = directory / "hub.pub"
    hub_pub.write_bytes(public_key_to_pem(network.hub_key.algorithm, network.hub_public_key))
    tls = network.tls_of(code)
    (directory / pki.CA_CERT).write_bytes(tls.ca)
    (directory / pki.client_cert_file(code)).write_bytes(tls.cert)
    (directory / pki.client_key_file(code)).write_bytes(tls.key)
    return [
        "--hub", network.target, "--institution", code,
        "--key", str(directory / f"{code.lower()}.key"),
        "--hub-key", str(hub_pub), "--tls-dir", str(directory),
    ]  # fmt: skip


async def stophub(network: Network, *args: str) -> Result:
    # In a thread: the command runs its own event loop while the hub serves on this one.
    return await asyncio.to_thread(
        CliRunner().invoke, main, list(args), obj={"clock": network.clock}
    )


async def test_stophub_replica_once_syncs_and_reports_a_refused_copy(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    assert network.list_key is not None
    case = await open_case(clients, network)
    await clients["CENTRE"].publish_list_entry(
        account=MULE, basis=TRADER, reason="sold the account", source_case_id=case.case_id
    )
    member = member_files(network, "PAYX", tmp_path / "payx")
    db = str(tmp_path / "cli-list.db")

    done = await stophub(network, "replica", *member, "--db", db, "--once")
    assert done.exit_code == 0, done.output
    assert "version 1, 1 entries, digest " in done.stdout
    with Replica(db, clients["PAYX"], Form.CLEAR, clock=network.clock) as r:
        assert r.version == 1 and r.digest.hex() in done.stdout
        assert r.is_listed_account("BANKB", "6222020000000002") is not None

    key_file = tmp_path / "list-key.json"
    network.list_key.save(key_file)
    tokens = ["--db", str(tmp_path / "cli-tokens.db"), "--form", "tokens", "--once"]
    done = await stophub(network, "replica", *member, *tokens, "--list-key", str(key_file))
    assert done.exit_code == 0, done.output
    assert "version 1, 1 entries" in done.stdout

    wrong = tmp_path / "wrong-key.json"
    ListKey.generate().save(wrong)
    tokens = ["--db", str(tmp_path / "cli-wrong.db"), "--form", "tokens", "--once"]
    refused = await stophub(network, "replica", *member, *tokens, "--list-key", str(wrong))
    assert refused.exit_code == 1
    assert "was not updated" in refused.output and network.list_key.key_id in refused.output

    shown = await stophub(network, "listkey", "show", "--file", str(key_file))
    assert shown.exit_code == 0 and shown.stdout.strip() == f"list key id {network.list_key.key_id}"
    assert base64.b64encode(network.list_key.key).decode() not in shown.output, "never the key"

    made = await stophub(network, "listkey", "generate", "--file", str(tmp_path / "new.json"))
    assert made.exit_code == 0 and "written to" in made.stdout
    again = await stophub(network, "listkey", "generate", "--file", str(tmp_path / "new.json"))
    assert again.exit_code == 1 and "exists" in again.output, "never overwritten"


async def test_stophub_replica_follows_and_stops_on_sigterm(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    network.clock.set(datetime.now(UTC))  # the command signs with the system's clock
    case = await open_case(clients, network)
    publish = clients["CENTRE"].publish_list_entry
    await publish(account=MULE, basis=TRADER, reason="sold it", source_case_id=case.case_id)
    member = member_files(network, "PAYX", tmp_path / "payx")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "hub.cli", "replica", *member, "--db", str(tmp_path / "f.db")),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None

    async def line_starting(prefix: str) -> str:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    pytest.fail(f"stophub replica ended: {(await proc.stderr.read()).decode()}")
                if line.startswith(prefix):
                    return line

    try:
        assert ", 1 entries, digest " in await line_starting("version 1,")
        await publish(account=WALLET, basis=TRADER, reason="rented", source_case_id=case.case_id)
        assert ", 2 entries, digest " in await line_starting("version 2,")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
    errors = (await proc.stderr.read()).decode()
    assert proc.returncode == 0, errors
    assert "following " + network.target in errors
