# The audit tree's fold in C (hub/domain/_merklefold.c, ADR 18).

def fold(
    nodes: list[bytes], size: int, packed: bytes | bytearray | memoryview, start: int, end: int, /
) -> int: ...
