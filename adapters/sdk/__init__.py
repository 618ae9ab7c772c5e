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
    read_hub_key,
    secure_channel,
    tls_credentials,
)
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
    "TlsConfig",
    "read_hub_key",
    "secure_channel",
    "tls_credentials",
]
