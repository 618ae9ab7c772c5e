"""The client SDK an institution uses to talk to StopHub."""

from adapters.sdk.client import (
    HUB,
    RPCS,
    Clock,
    Delivery,
    DeliveryStream,
    HubClient,
    HubError,
    HubSignatureError,
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
    "HubClient",
    "HubError",
    "HubSignatureError",
    "TlsConfig",
    "secure_channel",
    "tls_credentials",
]
