"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their verification.

Pure functions over byte strings. Leaves hash as ``SHA-256(0x00 || entry)`` and interior nodes
as ``SHA-256(0x01 || left || right)``; the tree over ``n`` leaves splits at the largest power
of two smaller than ``n`` (RFC 9162 section 2.1.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """The Merkle leaf hash of one entry's bytes."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class StreamingRoot:
    """Computes the tree head of a stream of leaf hashes in O(log n) memory."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes decreasing
        self.size = 0

    def add(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        size, value = 1, leaf
        stack = self._stack
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            value = node_hash(left, value)
            size += left_size
        stack.append((size, value))
        self.size += 1

    def root(self) -> bytes:
        """The tree head of everything added so far."""
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _size, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def root_of(leaves: Iterable[bytes]) -> bytes:
    """The tree head of the given leaf hashes."""
    builder = StreamingRoot()
    for leaf in leaves:
        builder.add(leaf)
    return builder.root()


class MerkleTree:
    """A tree over leaf hashes held in memory (32 bytes each plus one level index per power of
    two), answering subtree hashes in O(log n); used to produce proofs for exports."""

    def __init__(self, leaves: Sequence[bytes] | bytes | bytearray) -> None:
        if isinstance(leaves, bytes | bytearray):
            flat = bytes(leaves)
            if len(flat) % HASH_SIZE:
                raise ValueError("leaf hash buffer is not a multiple of 32 bytes")
        else:
            flat = b"".join(leaves)
        self.size = len(flat) // HASH_SIZE
        self._levels: list[bytes] = [flat]
        level = flat
        while len(level) >= 2 * HASH_SIZE:
            pairs = len(level) // (2 * HASH_SIZE)
            level = b"".join(
                node_hash(level[i * 64 : i * 64 + 32], level[i * 64 + 32 : i * 64 + 64])
                for i in range(pairs)
            )
            self._levels.append(level)

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE]

    def _hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for ranges arising in RFC 9162's recursion."""
        n = end - start
        if n == 1:
            return self.leaf(start)
        if n & (n - 1) == 0:  # a perfect, aligned subtree: precomputed
            height = n.bit_length() - 1
            i = start >> height
            return self._levels[height][i * HASH_SIZE : (i + 1) * HASH_SIZE]
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The tree head over the first ``size`` leaves (default: all)."""
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise ValueError("size beyond the tree")
        return EMPTY_ROOT if n == 0 else self._hash(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1."""
        n = self.size if size is None else size
        if not 0 <= index < n <= self.size:
            raise ValueError("index outside the tree")
        return self._path(index, 0, n)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, start, start + k), self._hash(start + k, end)]
        return [*self._path(m - k, start + k, end), self._hash(start, start + k)]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 9162 section 2.1.4.1."""
        n = self.size if new_size is None else new_size
        if not 0 < old_size <= n <= self.size:
            raise ValueError("sizes outside the tree")
        if old_size == n:
            return []
        return self._subproof(old_size, 0, n, True)

    def _subproof(self, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [self._hash(start, end)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, complete), self._hash(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self._hash(start, start + k)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` put ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree ``new_root`` an append-only extension?"""
    if old_size < 1 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


BLOCK_BITS = 10
BLOCK = 1 << BLOCK_BITS  # leaves per block: the unit the stored tree caches hashes of


def block_hashes(leaves: bytes) -> bytes:
    """The concatenated tree heads of each complete block of ``BLOCK`` leaf hashes."""
    step = BLOCK * HASH_SIZE
    if len(leaves) % step:
        raise ValueError("not a whole number of blocks")
    return b"".join(MerkleTree(leaves[i : i + step]).root() for i in range(0, len(leaves), step))


class BlockedTree(MerkleTree):
    """The tree over ``size`` leaves, answered from the hashes of its complete blocks of
    ``BLOCK`` leaves plus the few blocks a proof actually touches.

    ``blocks`` holds the tree head of every complete block (32 bytes each, at least
    ``size // BLOCK`` of them); ``fetch(i)`` returns the leaf hashes of block ``i`` (the last
    one may be partial). Every range RFC 9162's recursion asks for either lies inside one
    block or is a block-aligned perfect subtree, so a root or proof reads O(1) blocks and
    hashes O(log n) nodes beyond what is cached: memory is 32 bytes per 1,024 leaves.
    """

    def __init__(self, size: int, blocks: bytes, fetch: Callable[[int], bytes]) -> None:
        complete = size >> BLOCK_BITS
        if len(blocks) < complete * HASH_SIZE:
            raise ValueError("fewer block hashes than complete blocks")
        self.size = size
        self._blocks = MerkleTree(blocks[: complete * HASH_SIZE]) if complete else None
        self._fetch = fetch
        self._cached: dict[int, MerkleTree] = {}

    def _block(self, index: int) -> MerkleTree:
        tree = self._cached.get(index)
        if tree is None:
            want = min(BLOCK, self.size - (index << BLOCK_BITS))
            data = self._fetch(index)
            if len(data) != want * HASH_SIZE:
                raise ValueError(f"block {index} has {len(data) // HASH_SIZE} of {want} leaves")
            if len(self._cached) >= 4:  # proofs in order touch one or two blocks at a time
                self._cached.pop(next(iter(self._cached)))
            tree = self._cached[index] = MerkleTree(data)
        return tree

    def leaf(self, index: int) -> bytes:
        return self._block(index >> BLOCK_BITS).leaf(index & (BLOCK - 1))

    def _hash(self, start: int, end: int) -> bytes:
        n = end - start
        if n >= BLOCK and n & (n - 1) == 0 and self._blocks is not None:
            return self._blocks._hash(start >> BLOCK_BITS, end >> BLOCK_BITS)
        if n <= BLOCK:  # inside one block (ranges of RFC 9162's recursion never straddle one)
            base = start & ~(BLOCK - 1)
            return self._block(start >> BLOCK_BITS)._hash(start - base, end - base)
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))
