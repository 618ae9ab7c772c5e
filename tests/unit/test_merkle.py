"""The audit log's Merkle tree against RFC 6962's published vectors (the Certificate
Transparency reference tree of eight leaves: its roots, audit paths and consistency proofs),
and properties over every shape: every proof verifies, and any change to a leaf, a proof
element, a size or a root makes it fail."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain import merkle
from hub.domain.merkle import (
    EMPTY_ROOT,
    CompactRange,
    TiledTree,
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

H = bytes.fromhex
# RFC 6962 / certificate-transparency's reference inputs and the roots of their prefixes.
INPUTS = [H(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")] + [
    H("606162636465666768696a6b6c6d6e6f")
]
LEAVES = [leaf_hash(x) for x in INPUTS]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path)
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (first size, second size, consistency proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def test_the_hashes_carry_the_rfc_prefixes() -> None:
    assert EMPTY_ROOT.hex() == ROOTS[0] == hashlib.sha256(b"").hexdigest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_the_roots_of_the_reference_tree() -> None:
    grown = CompactRange()
    for n in range(9):
        assert root_of(LEAVES[:n]).hex() == ROOTS[n], n
        assert grown.root().hex() == ROOTS[n], n
        if n < 8:
            grown.append(LEAVES[n])


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_the_reference_audit_paths(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(index, LEAVES[:size])
    assert [p.hex() for p in proof] == path
    root = H(ROOTS[size])
    assert verify_inclusion(index, size, LEAVES[index], proof, root)
    assert not verify_inclusion(index, size, LEAVES[index], proof, H(ROOTS[size - 1]))
    assert not verify_inclusion(index ^ 1, size, LEAVES[index], proof, root)


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_the_reference_consistency_proofs(first: int, second: int, path: list[str]) -> None:
    proof = consistency_proof(first, LEAVES[:second])
    assert [p.hex() for p in proof] == path
    assert verify_consistency(first, second, proof, H(ROOTS[first]), H(ROOTS[second]))
    if first != second:
        assert not verify_consistency(first, second, proof, H(ROOTS[first - 1]), H(ROOTS[second]))


def _flip(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_audit_path_verifies_and_any_change_fails(n: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    root = root_of(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(index, n, leaves[index], proof, root)
    assert not verify_inclusion(index, n, _flip(leaves[index]), proof, root)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:at], _flip(proof[at]), *proof[at + 1 :]]
        assert not verify_inclusion(index, n, leaves[index], bad, root)
        assert not verify_inclusion(index, n, leaves[index], proof[:-1], root)
    if n > 1:
        other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index))
        assert not verify_inclusion(other, n, leaves[index], proof, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_consistency_proof_verifies_and_a_rewritten_past_fails(
    n: int, data: st.DataObject
) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    first = data.draw(st.integers(1, n))
    proof = consistency_proof(first, leaves)
    old, new = root_of(leaves[:first]), root_of(leaves)
    assert verify_consistency(first, n, proof, old, new)
    # An entry of the first tree changed afterwards: the old checkpoint no longer fits.
    changed = data.draw(st.integers(0, first - 1))
    rewritten = [*leaves[:changed], _flip(leaves[changed]), *leaves[changed + 1 :]]
    assert not verify_consistency(
        first, n, consistency_proof(first, rewritten), old, root_of(rewritten)
    )
    if first < n:
        assert not verify_consistency(first, n, proof, _flip(old), new)
        assert not verify_consistency(first, n, proof, old, _flip(new))


def test_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(3, LEAVES[:3])
    with pytest.raises(ValueError):
        consistency_proof(0, LEAVES)
    assert not verify_inclusion(8, 8, LEAVES[0], [], H(ROOTS[8]))
    assert not verify_consistency(5, 4, [], H(ROOTS[5]), H(ROOTS[4]))
    assert not verify_consistency(3, 5, [], H(ROOTS[3]), H(ROOTS[5]))


# ---- stored subtree roots (ADR 16) ------------------------------------------------------------

BIG = 70_000  # past 2^16: roots stored at heights 8 and 16


@pytest.fixture(scope="module")
def big_log() -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(BIG)]
    tree, completed = CompactRange(), []
    for leaf in leaves:
        tree.append(leaf, completed)
    return leaves, {(h, i): n for h, i, n in completed}


class Reader:
    """The store's `nodes(height, first, end)` over a list and a dict, counting rows read."""

    def __init__(self, leaves: list[bytes], nodes: dict[tuple[int, int], bytes]) -> None:
        self.leaves, self.stored, self.rows = leaves, nodes, 0

    def __call__(self, height: int, first: int, end: int) -> list[bytes]:
        if height == 0:
            found = self.leaves[first:end]
        else:
            found = [
                self.stored[height, i] for i in range(first, end) if (height, i) in self.stored
            ]
        self.rows += len(found)
        return found


def test_the_sequencer_keeps_the_root_of_every_perfect_subtree_at_each_8th_height(
    big_log: tuple[list[bytes], dict[tuple[int, int], bytes]],
) -> None:
    leaves, nodes = big_log
    assert {h for h, _ in nodes} == {8, 16}
    assert len([1 for h, _ in nodes if h == 8]) == BIG // 256
    assert len([1 for h, _ in nodes if h == 16]) == BIG // 65536
    for (height, index), node in list(nodes.items())[::37]:
        width = 1 << height
        assert node == root_of(leaves[index * width : (index + 1) * width])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_proofs_from_stored_roots_equal_proofs_from_every_leaf(
    big_log: tuple[list[bytes], dict[tuple[int, int], bytes]], data: st.DataObject
) -> None:
    leaves, nodes = big_log
    size = data.draw(st.integers(1, BIG), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    first = data.draw(st.integers(1, size), label="first")
    read = Reader(leaves[:size], nodes)
    tree = TiledTree(read)
    assert inclusion_path(index, size, tree) == inclusion_proof(index, leaves[:size])
    assert consistency_path(first, size, tree) == consistency_proof(first, leaves[:size])
    # O(log n) rows, not n: a few hundred at most for the two proofs together.
    assert read.rows <= 4 * 128 * size.bit_length()


@pytest.mark.parametrize("keep", [(), (8,)], ids=["no-roots-stored", "only-height-8"])
def test_a_log_without_its_roots_is_answered_from_the_level_below(
    big_log: tuple[list[bytes], dict[tuple[int, int], bytes]], keep: tuple[int, ...]
) -> None:
    leaves, nodes = big_log
    partial = {k: v for k, v in nodes.items() if k[0] in keep}
    tree = TiledTree(Reader(leaves, partial))
    for index in (0, 255, 256, 65_535, 65_536, BIG - 1):
        assert inclusion_path(index, BIG, tree) == inclusion_proof(index, leaves)
    assert consistency_path(65_537, BIG, tree) == consistency_proof(65_537, leaves)


def test_a_missing_leaf_is_an_error_not_a_wrong_proof() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(10)]
    tree = TiledTree(Reader(leaves[:7], {}))
    with pytest.raises(ValueError, match="no leaf"):
        inclusion_path(2, 10, tree)


@given(
    st.integers(0, 200),
    st.lists(st.integers(0, 70), max_size=8),
    st.data(),
)
def test_the_fold_in_c_is_the_fold_in_python(
    start: int, steps: list[int], data: st.DataObject
) -> None:
    """`extend_packed` folds in C where it was built (hub/domain/_merklefold.c): for any tree
    and any run of appends, the subtree roots, size and root are those of the Python loop."""
    if merkle._fold is None:
        pytest.skip("hub/domain/_merklefold.c is not built here: extend_packed is the Python loop")
    total = start + sum(steps)
    packed = data.draw(st.binary(min_size=32 * total, max_size=32 * total))
    in_c, in_python = CompactRange(), CompactRange()
    in_c.extend_packed(packed, 0, start)
    in_python.extend_packed_in_python(packed, 0, start)
    at = start
    for step in steps:
        in_c.extend_packed(bytearray(packed), at, at + step)
        in_python.extend_packed_in_python(packed, at, at + step)
        at += step
        assert (in_c.size, in_c.nodes) == (in_python.size, in_python.nodes)
    assert (
        in_c.root()
        == in_python.root()
        == root_of([packed[i : i + 32] for i in range(0, 32 * total, 32)])
    )


def test_the_fold_in_c_refuses_what_is_not_a_range() -> None:
    if merkle._fold is None:
        pytest.skip("hub/domain/_merklefold.c is not built here: extend_packed is the Python loop")
    with pytest.raises(ValueError, match="not all in"):
        merkle._fold([], 0, bytes(64), 1, 3)
    with pytest.raises(ValueError, match="not all in"):
        merkle._fold([], 0, bytes(64), 2, 1)
    with pytest.raises(ValueError, match="not the range of"):
        merkle._fold([bytes(32)], 3, bytes(64), 0, 1)  # 3 leaves make two subtrees
    with pytest.raises(ValueError, match="not the range of"):
        merkle._fold([bytes(32), bytes(32)], 2, bytes(64), 0, 1)
    with pytest.raises(ValueError, match="32 bytes"):
        merkle._fold([bytes(31)], 1, bytes(64), 0, 1)
