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
)

__all__ = [
    "HUB",
    "RPCS",
    "Clock",
    "Delivery",
    "DeliveryStream",
    "HubClient",
    "HubError",
    "HubSignatureError",
]
