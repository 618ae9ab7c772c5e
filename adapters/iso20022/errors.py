"""What the ISO 20022 bridge raises: every refusal names the element or code and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class Iso20022Error(ValueError):
    """Base of every error of the bridge; a ValueError so callers may catch either."""


class MalformedXml(Iso20022Error):
    """The bytes are not well-formed XML, or carry a DOCTYPE (refused: no entities, no DTDs)."""


class WrongMessageType(Iso20022Error):
    """The document is not the message asked for (another message, version or namespace)."""

    def __init__(self, expected: str, found: str) -> None:
        self.expected = expected
        self.found = found
        super().__init__(f"expected a {expected} Document, got {found}")


class SchemaViolation(Iso20022Error):
    """The document fails its XSD; `errors` lists libxml2's findings (line: element: what)."""

    def __init__(self, schema: str, errors: Iterable[str]) -> None:
        self.schema = schema
        self.errors = tuple(errors)
        shown = "; ".join(self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"not a valid {schema} document: {shown}{more}")


class UnsupportedCode(Iso20022Error):
    """A status or reason code that StopHub does not map; nothing unknown is guessed."""

    def __init__(self, element: str, code: str, allowed: Iterable[str]) -> None:
        self.element = element
        self.code = code
        self.allowed = tuple(sorted(allowed))
        super().__init__(
            f"{element}: unsupported code {code!r}; allowed: {', '.join(self.allowed)}"
        )


class UnmappableContent(Iso20022Error):
    """Valid XML that StopHub cannot take as it stands (another currency, a sub-fen amount,
    a missing element StopHub needs, contradicting elements), or a StopHub value that the
    ISO message cannot carry (too long, empty where the schema needs text, unknown kind)."""

    def __init__(self, element: str, problem: str) -> None:
        self.element = element
        self.problem = problem
        super().__init__(f"{element}: {problem}")
