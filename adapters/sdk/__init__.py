"""The client SDK an institution uses to talk to StopHub."""

from adapters.sdk.client import (
    HUB,
    RPCS,
    Clock,
    Delivery,
    DeliveryStream,
    HubCertificateError,
    HubClient,
    HubError,
    HubKey,
    HubSignatureError,
    LogForkAlarm,
    read_hub_key,
    secure_channel,
    tls_credentials,
)
from adapters.sdk.witness import LogWitness
from hub.crypto.pki import TlsConfig

__all__ = [
    "HUB",
    "RPCS",
    "Clock",
    "Delivery",
    "DeliveryStream",
    "HubCertificateError",
    "HubClient",
    "HubError",
    "HubKey",
    "HubSignatureError",
    "LogForkAlarm",
    "LogWitness",
    "TlsConfig",
    "read_hub_key",
    "secure_channel",
    "tls_credentials",
]
