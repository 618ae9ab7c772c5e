"""Issue 24, links: institutions reach the hub through a TLCP gateway (docs/tlcp-gateway.md,
ADR 24). The hub pins the gateway's own certificate and believes the institution certificate
the gateway forwards (`stophub-client-cert-bin`) from it alone: a call through the gateway is
accepted as the institution that connected to it; the header sent by a member straight to the
hub is refused, as it is from a gateway the hub does not pin; a gateway that claims another
institution than the envelope's signer is refused, and cannot sign in anyone's name either,
since every envelope is still verified against the institution's registered key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from adapters.sdk import HubClient, secure_channel
from hub.api.runner import CLIENT_CERT_METADATA
from hub.cli import main
from hub.crypto import pki
from hub.crypto.keys import PrivateKey, save_private_key
from hub.system.clock import ManualClock
from stophub.v1 import case_pb2, case_pb2_grpc, delivery_pb2, delivery_pb2_grpc
from tests.e2e.conftest import Network, start_network, tls_for
from tests.e2e.test_wire_rules import audit_kinds, count_cases, error_info
from tests.e2e.tlcp_gateway import Gateway
from tests.e2e.wire_helpers import report, sign


@dataclass
class Link:
    """The hub, the gateway in front of it, and the CA that stands in for the national-
    cryptography CA whose certificates institutions present to the gateway."""

    network: Network
    gateway: Gateway
    gm_ca: pki.Issued
    gateway_cert: pki.Issued

    def member_tls(self, code: str) -> pki.TlsConfig:
        """`code`'s certificate for the gateway's side (TLCP's, in a real deployment)."""
        issued = pki.issue_client(self.gm_ca, code, datetime.now(UTC))
        return pki.TlsConfig(self.gm_ca.cert_pem, issued.cert_pem, issued.key_pem)

    def client(self, code: str) -> HubClient:
        return HubClient(
            self.gateway.target,
            institution=code,
            key=self.network.keys[code],
            hub_public_key=self.network.hub_public_key,
            clock=self.network.clock,
            tls=self.member_tls(code),
        )


def der(issued: pki.Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


async def gateway_for(
    link_network: Network, gm_ca: pki.Issued, cert: pki.Issued, **kw: object
) -> Gateway:
    now = datetime.now(UTC)
    listen = tls_for(gm_ca, pki.issue_server(gm_ca, now))
    return await Gateway(
        link_network.target,
        tls_for(link_network.ca, cert),
        listen,
        **kw,  # type: ignore[arg-type]
    ).start()


@pytest.fixture
async def link(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Link]:
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    gateway_cert = pki.issue_gateway(ca, "tlcp-1", now)
    network = await start_network(tmp_path, clock, ca=ca, gateways=[gateway_cert.cert_pem])
    gm_ca = pki.create_ca(now)
    gateway = await gateway_for(network, gm_ca, gateway_cert)
    try:
        yield Link(network, gateway, gm_ca, gateway_cert)
    finally:
        await gateway.stop()
        await network.server.stop(0.5)
        network.store.dispose()


async def test_an_institution_through_the_gateway_is_accepted_as_itself(link: Link) -> None:
    async with link.client("BANKA") as banka:
        case = await banka.create_report(report(link.network.clock.now()))
        # The hub's answer, signed by the hub and checked by the SDK, came back through it,
        # the log checkpoint in its trailers too.
        assert case.case_id
        _, checkpoint = await banka.get_log_checkpoint(fresh=True)
        assert checkpoint.tree_size > 0
    assert "/stophub.v1.CaseService/CreateReport" in link.gateway.forwarded
    with link.network.store(read_only=True) as uow:
        stored = uow.cases.get(case.case_id)
        assert stored is not None and stored.reporting_institution == "BANKA"


async def test_a_delivery_stream_opens_through_the_gateway(link: Link) -> None:
    network = link.network
    async with secure_channel(link.gateway.target, link.member_tls("BANKB")) as channel:
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveries()
        hello = sign(
            network.keys["BANKB"], "BANKB", delivery_pb2.SubscribeBody(), network.clock.now()
        )
        await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
        opening = await call.read()
        assert isinstance(opening, delivery_pb2.StreamDeliveriesResponse)
        assert ("stophub-subscribed", "BANKB") in tuple(await call.initial_metadata())
        call.cancel()


async def create_report(
    channel: grpc.aio.Channel, envelope: object, metadata: tuple[tuple[str, bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
            case_pb2.CreateReportRequest(envelope=envelope),  # type: ignore[arg-type]
            metadata=metadata,
        )
    return caught.value


async def test_the_header_sent_by_a_member_straight_to_the_hub_is_refused(link: Link) -> None:
    """BANKB, with its own network certificate, claims BANKA's gateway-side certificate:
    refused, audited, nothing made; with its own envelope as much as with another's."""
    network = link.network
    now = network.clock.now()
    banka_cert = pki.issue_client(link.gm_ca, "BANKA", datetime.now(UTC))
    claim = ((CLIENT_CERT_METADATA, der(banka_cert)),)
    async with network.channel("BANKB") as channel:
        for signer in ("BANKB", "BANKA"):
            envelope = sign(network.keys[signer], signer, report(now), now)
            err = await create_report(channel, envelope, claim)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(err)[0].reason == "GATEWAY_HEADER_REFUSED", err.details()
            assert "not one" in (err.details() or "")
    assert await count_cases(network) == 0
    assert any(
        kind == "rejected" and "GATEWAY_HEADER_REFUSED" in detail
        for kind, detail in await audit_kinds(network)
    )


async def test_a_gateway_claiming_another_institution_than_the_signer_is_refused(
    link: Link,
) -> None:
    """A compromised gateway forwards BANKA's certificate whoever connects. BANKB's own
    envelope through it: the certificate and the signature disagree. An envelope the gateway
    signs itself as BANKA: no registered key of BANKA's signed it. The gateway can route and
    read; it cannot make the hub believe BANKA said anything BANKA did not sign."""
    network = link.network
    banka_cert = pki.issue_client(link.gm_ca, "BANKA", datetime.now(UTC))
    liar = await gateway_for(network, link.gm_ca, link.gateway_cert, claim=der(banka_cert))
    try:
        now = network.clock.now()
        async with secure_channel(liar.target, link.member_tls("BANKB")) as channel:
            err = await create_report(
                channel, sign(network.keys["BANKB"], "BANKB", report(now), now)
            )
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(err)[0].reason == "CERTIFICATE_MISMATCH"
            assert "'BANKA'" in (err.details() or "") and "'BANKB'" in (err.details() or "")

            forged = sign(PrivateKey.generate(), "BANKA", report(now), now)
            err = await create_report(channel, forged)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(err)[0].reason == "UNKNOWN_KEY"
    finally:
        await liar.stop()
    assert await count_cases(network) == 0


async def test_a_gateway_the_hub_does_not_pin_is_no_gateway(link: Link) -> None:
    """Issued by the network's CA with a gateway's name, but not pinned: its forwarded
    certificate is refused like a member's."""
    network = link.network
    other = pki.issue_gateway(network.ca, "tlcp-2", datetime.now(UTC))
    unpinned = await gateway_for(network, link.gm_ca, other)
    try:
        now = network.clock.now()
        async with secure_channel(unpinned.target, link.member_tls("BANKA")) as channel:
            err = await create_report(
                channel, sign(network.keys["BANKA"], "BANKA", report(now), now)
            )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(err)[0].reason == "GATEWAY_HEADER_REFUSED"
    finally:
        await unpinned.stop()


async def test_a_pinned_gateway_must_forward_one_certificate_naming_an_institution(
    link: Link,
) -> None:
    network = link.network
    now = network.clock.now()
    envelope = sign(network.keys["BANKA"], "BANKA", report(now), now)
    async with secure_channel(network.target, tls_for(network.ca, link.gateway_cert)) as channel:
        err = await create_report(channel, envelope)
        assert error_info(err)[0].reason == "NO_CLIENT_CERTIFICATE"
        assert "forwarded 0 client certificates" in (err.details() or "")
        nameless = pki.issue_gateway(link.gm_ca, "not-an-institution", datetime.now(UTC))
        for forwarded in (der(nameless), b"not a certificate"):
            err = await create_report(channel, envelope, ((CLIENT_CERT_METADATA, forwarded),))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(err)[0].reason == "NO_CLIENT_CERTIFICATE"
        # Straight from the gateway with a right header: the institution it names.
        banka = pki.issue_client(link.gm_ca, "BANKA", datetime.now(UTC))
        answer = await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
            case_pb2.CreateReportRequest(envelope=envelope),
            metadata=((CLIENT_CERT_METADATA, der(banka)),),
        )
        assert answer.envelope.sender == "HUB"


async def test_serve_pins_only_a_gateways_certificate(tmp_path: Path, clock: ManualClock) -> None:
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    member = pki.issue_client(ca, "BANKA", now)
    with pytest.raises(pki.PkiError, match="not a gateway's certificate"):
        await start_network(tmp_path, clock, ca=ca, gateways=[member.cert_pem])
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    (tmp_path / "gw.pem").write_bytes(pki.issue_gateway(ca, "g", now).cert_pem)
    (tmp_path / "member.pem").write_bytes(member.cert_pem)
    db = tmp_path / "never.db"
    base = ["serve", "--db", f"sqlite:///{db}", "--hub-key", str(tmp_path / "hub.key")]
    plain = CliRunner().invoke(
        main, [*base, "--insecure-plaintext", "--tls-gateway", str(tmp_path / "gw.pem")]
    )
    assert plain.exit_code == 2 and "not with --insecure-plaintext" in plain.output
    pki.init(tmp_path / "pki", now)
    wrong = CliRunner().invoke(
        main,
        [*base, "--tls-dir", str(tmp_path / "pki"), "--tls-gateway", str(tmp_path / "member.pem")],
    )
    assert wrong.exit_code == 2 and "not a gateway's certificate" in wrong.output
    assert not db.exists()


async def test_a_stream_with_the_header_straight_from_a_member_is_refused(link: Link) -> None:
    network = link.network
    banka_cert = pki.issue_client(link.gm_ca, "BANKA", datetime.now(UTC))
    async with network.channel("BANKB") as channel:
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveries(
            metadata=((CLIENT_CERT_METADATA, der(banka_cert)),)
        )
        hello = sign(
            network.keys["BANKB"], "BANKB", delivery_pb2.SubscribeBody(), network.clock.now()
        )
        await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value)[0].reason == "GATEWAY_HEADER_REFUSED"


def test_pki_issue_gateway_writes_a_certificate_the_hub_can_pin(tmp_path: Path) -> None:
    pki.init(tmp_path / "ca", datetime.now(UTC))
    result = CliRunner().invoke(
        main,
        [
            "pki",
            "issue-gateway",
            "tlcp-1",
            "--dir",
            str(tmp_path / "ca"),
            "--out-dir",
            str(tmp_path / "gw"),
        ],
    )
    assert result.exit_code == 0, result.output
    cert = tmp_path / "gw" / "gateway-tlcp-1-tls.pem"
    assert f"--tls-gateway {cert}" in result.output
    assert (tmp_path / "gw" / "gateway-tlcp-1-tls.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "gw" / "ca.pem").exists()
    pins = pki.gateway_pins([cert.read_bytes()])
    assert pins == {pki.fingerprint(cert.read_bytes())}
    assert pki.fingerprint(cert.read_bytes()) in result.output
    again = CliRunner().invoke(
        main,
        [
            "pki",
            "issue-gateway",
            "tlcp-1",
            "--dir",
            str(tmp_path / "ca"),
            "--out-dir",
            str(tmp_path / "gw"),
        ],
    )
    assert again.exit_code == 1 and "exists" in again.output
