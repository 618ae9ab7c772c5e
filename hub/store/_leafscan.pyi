# The C accelerator's interface (hub/store/_leafscan.c, ADR 18).
from typing import Any

OPENSSL_VERSION: str

def hash_rows(
    rows: list[Any],
    sqlite: bool,
    keys: dict[bytes, bytes],
    detail_aad: bytes,
    payload_aad: bytes,
    tag_keys: dict[bytes, bytes],
    /,
) -> tuple[bytes, bytes, bytes, list[int], list[int]]: ...
