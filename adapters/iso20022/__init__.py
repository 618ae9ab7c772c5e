"""ISO 20022 bridge: StopHub orders and answers as camt.056 and camt.029.

    from adapters.iso20022 import order_to_camt056, camt029_to_execution, ...

- `order_to_camt056(order)` / `camt056_to_order(xml)`: a stop or fund-return order
  (stophub.v1.Order) as a camt.056.001.12 FIToFIPaymentCancellationRequest, reason FRAD.
- `execution_to_camt029(result, ...)` / `camt029_to_execution(xml)`: an answer
  (stophub.v1.ExecutionResult) as a camt.029.001.14 ResolutionOfInvestigation.

Every document written or read is validated against the official ISO 20022 XSD vendored in
`xsd/` (and the StopHub supplement against `ext/`). Every refusal is an `Iso20022Error`
(a ValueError) naming the element or code. Mapping: docs/iso20022.md.
"""

from adapters.iso20022.camt029 import Resolution, camt029_to_execution, execution_to_camt029
from adapters.iso20022.camt056 import camt056_to_order, order_to_camt056
from adapters.iso20022.errors import (
    Iso20022Error,
    MalformedXml,
    SchemaViolation,
    UnmappableContent,
    UnsupportedCode,
    WrongMessageType,
)

stop_to_camt056 = order_to_camt056
"""Alias: a stop order as camt.056 (fund returns go through the same function)."""
camt056_to_stop = camt056_to_order
"""Alias: the order a camt.056 carries (a stop, or a fund return with the StopHub supplement)."""

__all__ = [
    "Iso20022Error",
    "MalformedXml",
    "Resolution",
    "SchemaViolation",
    "UnmappableContent",
    "UnsupportedCode",
    "WrongMessageType",
    "camt029_to_execution",
    "camt056_to_order",
    "camt056_to_stop",
    "execution_to_camt029",
    "order_to_camt056",
    "stop_to_camt056",
]
