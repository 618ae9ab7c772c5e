"""The grpc.aio server: StopHub's services plus health checking and reflection, on one port
that speaks mutual TLS (or plain text, for development). What it serves is built and started
in hub/bootstrap.py."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from hub.api.decoding import DecodeGuard
from hub.api.delivery import CHECKPOINT_EVERY, DeliveryRouter, DeliveryServicer
from hub.api.lists import ListServicer
from hub.api.runner import Runner
from hub.api.servicers import (
    AppealServicer,
    AuditServicer,
    CaseServicer,
    DistributionServicer,
    InstitutionServicer,
    LeadServicer,
    OrderServicer,
    OutcomeServicer,
    SlaServicer,
    WarningServicer,
)
from hub.crypto.pki import TlsConfig
from hub.observability.metrics import HubMetrics, RpcInterceptor
from stophub.v1 import (
    appeal_pb2,
    appeal_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    blacklist_pb2,
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    institution_pb2,
    institution_pb2_grpc,
    lead_pb2,
    lead_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    outcome_pb2,
    outcome_pb2_grpc,
    returns_pb2,
    returns_pb2_grpc,
    sla_pb2,
    sla_pb2_grpc,
    warning_pb2,
    warning_pb2_grpc,
)

SERVICE_NAMES = (
    case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
    order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
    institution_pb2.DESCRIPTOR.services_by_name["InstitutionService"].full_name,
    sla_pb2.DESCRIPTOR.services_by_name["SlaService"].full_name,
    returns_pb2.DESCRIPTOR.services_by_name["DistributionService"].full_name,
    blacklist_pb2.DESCRIPTOR.services_by_name["ListService"].full_name,
    appeal_pb2.DESCRIPTOR.services_by_name["AppealService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    outcome_pb2.DESCRIPTOR.services_by_name["OutcomeService"].full_name,
    lead_pb2.DESCRIPTOR.services_by_name["LeadService"].full_name,
    warning_pb2.DESCRIPTOR.services_by_name["WarningService"].full_name,
)

OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Let clients ping every 10 s to detect dead links; the default refuses < 5 min.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def grpc_server(
    runner: Runner,
    router: DeliveryRouter,
    lists: ListServicer,
    health_servicer: HealthServicer,
    metrics: HubMetrics,
    *,
    checkpoint_every: float = CHECKPOINT_EVERY,
) -> grpc.aio.Server:
    """Every StopHub service, health and reflection on one server (not bound yet)."""
    server = grpc.aio.server(
        # The metrics first: they see what DecodeGuard refuses.
        interceptors=[RpcInterceptor(metrics), DecodeGuard(runner)],
        options=OPTIONS,
    )
    case_pb2_grpc.add_CaseServiceServicer_to_server(CaseServicer(runner), server)
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(runner), server)
    institution_pb2_grpc.add_InstitutionServiceServicer_to_server(
        InstitutionServicer(runner), server
    )
    sla_pb2_grpc.add_SlaServiceServicer_to_server(SlaServicer(runner), server)
    returns_pb2_grpc.add_DistributionServiceServicer_to_server(DistributionServicer(runner), server)
    delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(
        DeliveryServicer(runner, router, checkpoint_every=checkpoint_every), server
    )
    server.add_generic_rpc_handlers((lists.handler(),))
    appeal_pb2_grpc.add_AppealServiceServicer_to_server(AppealServicer(runner), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(runner), server)
    outcome_pb2_grpc.add_OutcomeServiceServicer_to_server(OutcomeServicer(runner), server)
    lead_pb2_grpc.add_LeadServiceServicer_to_server(LeadServicer(runner), server)
    warning_pb2_grpc.add_WarningServiceServicer_to_server(WarningServicer(runner), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


def bind(server: grpc.aio.Server, address: str, tls: TlsConfig | None) -> int:
    """Bind `address` (host:port, port 0 for any free port); returns the bound port.

    With `tls`, the port speaks TLS only and every client must present a certificate the
    network's CA issued (health and reflection included). Without it the port is plain text:
    development only."""
    if tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return port
