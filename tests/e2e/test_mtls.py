"""Mutual TLS between members and the hub: who may connect, and who may sign what.

The `network` hub serves TLS only and requires a client certificate from the network's CA;
the institution that certificate names (its SAN URI) must be the sender of every envelope.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.sdk import (
    HubCertificateError,
    HubClient,
    HubError,
    secure_channel,
    tls_credentials,
)
from hub.bootstrap import serve
from hub.cli import main
from hub.crypto import pki
from hub.crypto.keys import PrivateKey, save_private_key
from hub.service.admin import NewKey, Registry
from hub.system.clock import ManualClock
from stophub.v1 import case_pb2, case_pb2_grpc, delivery_pb2, institution_pb2
from tests.e2e.conftest import MEMBERS, Network, contacts, tls_for
from tests.e2e.test_wire_rules import audit_kinds, count_cases, error_info
from tests.e2e.wire_helpers import RawStream, report, sign


async def health(target: str, credentials: grpc.ChannelCredentials) -> grpc.StatusCode | None:
    """None when the health check answers SERVING, else the status code of the failure."""
    async with grpc.aio.secure_channel(target, credentials) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    return None


def credentials(network: Network, issued: pki.Issued) -> grpc.ChannelCredentials:
    return tls_credentials(tls_for(network.ca, issued))


async def test_a_members_certificate_reaches_health_and_its_own_rpcs(network: Network) -> None:
    assert await health(network.target, tls_credentials(network.tls["REG"])) is None
    client = network.client("BANKA")
    async with client:
        found = await client.list_institutions()
    assert {i.code for i in found} >= set(MEMBERS)


async def test_connections_without_a_valid_network_certificate_fail_the_handshake(
    network: Network,
) -> None:
    now = datetime.now(UTC)
    ca = network.ca.cert_pem
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    foreign_ca = pki.create_ca(now, name="Some other CA")
    foreign = pki.issue_client(foreign_ca, "BANKA", now)
    expired = pki.issue_client(
        network.ca, "BANKA", now - timedelta(days=3), validity=timedelta(days=1)
    )
    not_yet = pki.issue_client(network.ca, "BANKA", now + timedelta(days=1))
    # A server certificate from the network's CA is not for clients (serverAuth only).
    server_only = pki.issue_server(network.ca, now)
    refused = {
        "no certificate": await health(network.target, no_cert),
        "another CA": await health(
            network.target,
            grpc.ssl_channel_credentials(ca, foreign.key_pem, foreign.cert_pem),
        ),
        "expired": await health(network.target, credentials(network, expired)),
        "not yet valid": await health(network.target, credentials(network, not_yet)),
        "server certificate": await health(network.target, credentials(network, server_only)),
    }
    assert refused == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)

    async with grpc.aio.insecure_channel(network.target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_hubs_ca_refuses_the_hub(network: Network) -> None:
    stranger = pki.create_ca(datetime.now(UTC))
    mine = network.tls["BANKA"]
    wrong_root = grpc.ssl_channel_credentials(stranger.cert_pem, mine.key, mine.cert)
    assert await health(network.target, wrong_root) == grpc.StatusCode.UNAVAILABLE


async def test_a_banks_certificate_cannot_carry_another_banks_envelope(network: Network) -> None:
    now = network.clock.now()
    as_bankb = sign(network.keys["BANKB"], "BANKB", report(now), now)
    async with network.channel("BANKA") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
                case_pb2.CreateReportRequest(envelope=as_bankb)
            )
    err = caught.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    info, rejection, _ = error_info(err)
    assert info.reason == "CERTIFICATE_MISMATCH"
    assert "'BANKA'" in err.details() and "'BANKB'" in err.details()
    assert rejection.message_id == as_bankb.message_id
    assert await count_cases(network) == 0
    assert any(
        kind == "rejected" and "CERTIFICATE_MISMATCH" in detail
        for kind, detail in await audit_kinds(network)
    )
    # The same envelope over BANKB's own certificate gets past authentication, to the rule
    # about whose customers a bank reports for.
    async with network.channel("BANKB") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
                case_pb2.CreateReportRequest(envelope=as_bankb)
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_is_opened_only_as_the_certificates_institution(network: Network) -> None:
    stream = RawStream(network, "BANKA", key=network.keys["BANKB"])
    hello = sign(network.keys["BANKB"], "BANKB", delivery_pb2.SubscribeBody(), network.clock.now())
    await stream.call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.next()
    finally:
        await stream.close()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value)[0].reason == "CERTIFICATE_MISMATCH"


async def test_a_network_certificate_without_an_institution_is_refused(network: Network) -> None:
    """Issued by the network's CA, for client auth, named BANKA in its CN, but without the
    SAN URI: the CN is not an identity the hub accepts."""
    now = datetime.now(UTC)
    cn_only = pki._leaf(
        network.ca,
        "BANKA",
        [x509.DNSName("banka.example")],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
        timedelta(days=1),
    )
    envelope = sign(network.keys["BANKA"], "BANKA", report(network.clock.now()), now)
    tls = tls_for(network.ca, cn_only)
    async with secure_channel(network.target, tls) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
                case_pb2.CreateReportRequest(envelope=envelope)
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value)[0].reason == "NO_CLIENT_CERTIFICATE"


def test_serve_without_tls_material_says_how_to_make_it(tmp_path: Path) -> None:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--hub-key",
            str(tmp_path / "hub.key"),
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            "--tls-dir",
            str(tmp_path / "pki"),
        ],
    )
    assert result.exit_code == 1
    assert "stophub pki init --dir" in result.output and "--insecure-plaintext" in result.output
    assert not (tmp_path / "x.db").exists(), "refused before touching the database"


async def test_pki_made_by_the_cli_is_what_server_and_client_use(
    tmp_path: Path, clock: ManualClock
) -> None:
    directory, bundle = tmp_path / "pki", tmp_path / "to-banka"
    runner = CliRunner()
    made = runner.invoke(main, ["pki", "init", "--dir", str(directory), "--name", "hub.test"])
    assert made.exit_code == 0, made.output
    assert pki.fingerprint((directory / "ca.pem").read_bytes()) in made.output
    issued = runner.invoke(
        main, ["pki", "issue", "BANKA", "--dir", str(directory), "--out-dir", str(bundle)]
    )
    assert issued.exit_code == 0, issued.output
    again = runner.invoke(main, ["pki", "init", "--dir", str(directory)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output

    hub_key, bank_key = PrivateKey.generate(), PrivateKey.generate()
    server, store = await serve(
        f"sqlite:///{tmp_path}/hub.db",
        hub_key,
        "127.0.0.1:0",
        clock=clock,
        sweep_interval=None,
        tls=pki.server_tls(directory),
    )
    try:
        name, kind = MEMBERS["BANKA"]
        Registry(store, clock).add_institution(
            "BANKA",
            name,
            kind,
            [NewKey(bank_key.algorithm, bank_key.public_key)],
            contacts("BANKA"),
        )
        target = f"127.0.0.1:{server.port}"
        # The hub's certificate names hub.test only: a client reaching it by IP checks it
        # against that name, and refuses it without the override.
        for server_name, works in ((None, False), ("hub.test", True)):
            client = HubClient(
                target,
                institution="BANKA",
                key=bank_key,
                hub_public_key=hub_key.public_key,
                clock=clock,
                tls=pki.client_tls(bundle, "BANKA", server_name=server_name),
                timeout=5,
            )
            async with client:
                if works:
                    found = await client.get_institution("BANKA")
                    assert found.kind == institution_pb2.INSTITUTION_KIND_BANK
                else:
                    # gRPC says only "Hostname Verification Check failed"; the SDK names the
                    # certificate's names and the one it checked, on a call and on connect().
                    with pytest.raises(HubCertificateError) as caught:
                        await client.get_institution("BANKA")
                    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
                    assert not caught.value.transient  # retrying cannot help
                    said = str(caught.value)
                    assert f"the hub at {target} presents a TLS certificate for hub.test," in said
                    assert "not for '127.0.0.1'" in said and "server_name=" in said
                    with pytest.raises(HubCertificateError) as on_connect:
                        await client.connect(timeout=10)
                    assert "for hub.test, not for '127.0.0.1'" in str(on_connect.value)
    finally:
        await server.stop(0)
        store.dispose()


async def test_a_hub_certificate_from_another_ca_is_named_and_ends_a_delivery_stream(
    network: Network,
) -> None:
    stranger = pki.create_ca(datetime.now(UTC), name="Some other CA")
    mine = network.tls["BANKA"]
    client = network.client(
        "BANKA", tls=pki.TlsConfig(stranger.cert_pem, mine.cert, mine.key), timeout=5
    )
    async with client:
        with pytest.raises(HubCertificateError) as caught:
            await client.get_institution("BANKA")
        said = str(caught.value)
        assert "issued by CN=StopHub network CA" in said, said
        assert pki.fingerprint(stranger.cert) in said  # the CA this client trusts instead
        # Not transient: the stream does not reconnect for ever, it ends with the reason.
        stream = client.deliveries("primary", initial_backoff=0.05, max_backoff=0.1)
        with pytest.raises(HubCertificateError):
            async with stream:
                async for _ in stream:
                    pass


async def test_connect_waits_for_the_hub_and_says_when_nothing_answers(network: Network) -> None:
    async with network.client("BANKA") as client:
        await client.connect(timeout=10)
        assert (await client.get_institution("BANKA")).code == "BANKA"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{unused.getsockname()[1]}"
        client = HubClient(
            nowhere,
            institution="BANKA",
            key=network.keys["BANKA"],
            hub_public_key=network.hub_public_key,
            tls=network.tls["BANKA"],
        )
        async with client:
            with pytest.raises(HubError) as caught:
                await client.connect(timeout=1)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and caught.value.transient
    assert f"no hub answered at {nowhere} within 1 s" in str(caught.value)


@pytest.mark.parametrize("names", [["127.0.0.1"], ["hub.example.cn"]])
async def test_connect_waits_for_a_hub_that_starts_late_and_names_a_wrong_certificate_soon(
    tmp_path: Path, clock: ManualClock, names: list[str]
) -> None:
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    hub_tls = tls_for(ca, pki.issue_server(ca, now, names))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    hub_key = PrivateKey.generate()
    client = HubClient(
        f"127.0.0.1:{port}",
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=hub_key.public_key,
        tls=tls_for(ca, pki.issue_client(ca, "BANKA", now)),
    )

    async def starting() -> tuple[object, object]:
        await asyncio.sleep(1.5)  # the hub is still starting when the client connects
        return await serve(
            f"sqlite:///{tmp_path}/hub.db",
            hub_key,
            f"127.0.0.1:{port}",
            clock=clock,
            sweep_interval=None,
            tls=hub_tls,
        )

    started = asyncio.create_task(starting())
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        if names == ["127.0.0.1"]:
            await client.connect(timeout=30)
        else:
            with pytest.raises(HubCertificateError, match=r"for hub\.example\.cn, not for"):
                await client.connect(timeout=30)
        assert loop.time() - began < 15, "named long before the timeout"
    finally:
        await client.close()
        server, store = await started
        await server.stop(0)  # type: ignore[attr-defined]
        store.dispose()  # type: ignore[attr-defined]
