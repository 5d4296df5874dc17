"""RFC 9162 Merkle tree: roots, inclusion and consistency proofs, checked exhaustively on small
trees against a direct transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.merkle import (
    BLOCK,
    EMPTY_ROOT,
    BlockedTree,
    MerkleTree,
    StreamingRoot,
    block_hashes,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, verbatim recursion (the reference)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(n)]


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    # RFC 6962 / 9162 leaf hashing of the empty string
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    one, two = leaf_hash(b"\x00"), leaf_hash(b"\x10")
    assert root_of([one, two]) == hashlib.sha256(b"\x01" + one + two).digest()


@pytest.mark.parametrize("n", range(0, 40))
def test_roots_match_reference(n: int) -> None:
    ls = leaves(n)
    assert root_of(ls) == mth(ls)
    if n:
        assert MerkleTree(ls).root() == mth(ls)


def test_every_inclusion_and_consistency_proof_up_to_33() -> None:
    ls = leaves(33)
    tree = MerkleTree(ls)
    for size in range(1, 34):
        root = mth(ls[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert verify_inclusion(ls[index], index, size, proof, root)
            assert not verify_inclusion(ls[index], index, size, proof, leaf_hash(b"x"))
            if size > 1:
                assert not verify_inclusion(ls[(index + 1) % size], index, size, proof, root)
                assert not verify_inclusion(ls[index], index, size, proof[:-1], root)
        for old in range(1, size + 1):
            proof = tree.consistency_proof(old, size)
            assert verify_consistency(old, size, mth(ls[:old]), root, proof)
            if old < size:
                assert not verify_consistency(old, size, leaf_hash(b"x"), root, proof)
                assert not verify_consistency(old, size, mth(ls[:old]), leaf_hash(b"y"), proof)


@given(st.integers(min_value=1, max_value=300), st.data())
def test_streaming_root_and_proofs_random(n: int, data: st.DataObject) -> None:
    ls = leaves(n)
    stream = StreamingRoot()
    for leaf in ls:
        stream.add(leaf)
    assert stream.root() == mth(ls) and stream.size == n
    tree = MerkleTree(b"".join(ls))
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    assert verify_inclusion(ls[index], index, n, tree.inclusion_proof(index), stream.root())
    old = data.draw(st.integers(min_value=1, max_value=n))
    assert verify_consistency(old, n, mth(ls[:old]), stream.root(), tree.consistency_proof(old))


def test_bad_arguments() -> None:
    tree = MerkleTree(leaves(4))
    with pytest.raises(ValueError):
        tree.inclusion_proof(4)
    with pytest.raises(ValueError):
        tree.consistency_proof(0)
    assert not verify_inclusion(leaf_hash(b""), 5, 4, [], EMPTY_ROOT)
    assert not verify_consistency(5, 4, EMPTY_ROOT, EMPTY_ROOT, [])


# -- the blocked tree the ledger store answers proofs from ----------------------------------------
def _blocked(ls: list[bytes], size: int) -> tuple[BlockedTree, list[int]]:
    flat = b"".join(ls)
    complete = size // BLOCK
    blocks = block_hashes(flat[: complete * BLOCK * 32])
    fetched: list[int] = []

    def fetch(i: int) -> bytes:
        fetched.append(i)
        return flat[i * BLOCK * 32 : min(size, (i + 1) * BLOCK) * 32]

    return BlockedTree(size, blocks, fetch), fetched


@pytest.mark.parametrize("size", [1, 2, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 4096, 5001])
def test_blocked_tree_matches_the_in_memory_tree(size: int) -> None:
    ls = leaves(size)
    reference = MerkleTree(ls)
    tree, _ = _blocked(ls, size)
    assert tree.root() == reference.root() == mth(ls)
    for old in sorted(
        {1, 2, size // 3 or 1, size - 1 or 1, 1024, 1025, size} & set(range(1, size + 1))
    ):
        assert tree.consistency_proof(old, size) == reference.consistency_proof(old, size)
    for index in sorted({0, size // 2, size - 1, 1023 % size, 1024 % size}):
        assert tree.inclusion_proof(index, size) == reference.inclusion_proof(index, size)


def test_blocked_tree_reads_only_the_blocks_a_proof_touches() -> None:
    size = 10 * BLOCK + 17
    ls = leaves(size)
    tree, fetched = _blocked(ls, size)
    proof = tree.consistency_proof(3 * BLOCK + 5, size)
    assert verify_consistency(3 * BLOCK + 5, size, mth(ls[: 3 * BLOCK + 5]), mth(ls), proof)
    assert len(set(fetched)) <= 2  # the block holding the old size and the partial last block
