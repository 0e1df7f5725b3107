"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs (the audit log's tree).

Pure Python over ``hashlib``: no Django, usable by offline verifiers (``kmsclient``).

Hashing (RFC 9162 §2.1.1), SHA-256::

    MTH({})        = SHA-256()                          (the empty tree)
    leaf hash      = SHA-256(0x00 || entry)
    node hash      = SHA-256(0x01 || left || right)
    MTH(D[0:n])    = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

The 0x00/0x01 prefixes keep a leaf from ever being read as an inner node (second-preimage
resistance of the tree). Proof generation takes a ``subtree(start, end)`` callable giving the
hash of leaves ``[start, end)``: the server answers it from stored perfect subtrees (see
:func:`subtree_from_perfect`), a test from a plain list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "consistency_proof",
    "inclusion_proof",
    "largest_power_of_two_below",
    "leaf_hash",
    "node_hash",
    "perfect_levels",
    "perfect_nodes_for_range",
    "root_from_leaf_hashes",
    "subtree_from_perfect",
    "verify_consistency",
    "verify_inclusion",
]

#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF = b"\x00"
_NODE = b"\x01"

Subtree = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(_LEAF + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n`` >= 2)."""
    if n < 2:
        raise ValueError("n must be at least 2")
    return 1 << ((n - 1).bit_length() - 1)


@dataclass
class Frontier:
    """The right edge of a tree: the roots of its perfect subtrees, largest (leftmost) first.

    A tree of ``size`` leaves has one perfect subtree per set bit of ``size``; appending a leaf
    merges equal-sized subtrees like a binary counter. Enough to append and to compute the root
    in O(log n) memory, without the leaves (Trillian's "compact range").
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.hashes) != bin(self.size).count("1"):
            raise ValueError("a frontier holds exactly one hash per set bit of its size")

    @staticmethod
    def levels(size: int) -> list[int]:
        """Levels (log2 of leaf counts) of the perfect subtrees of a tree of ``size`` leaves."""
        return [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]

    @staticmethod
    def positions(size: int) -> list[tuple[int, int]]:
        """``(level, index)`` of each perfect subtree of the frontier, left to right."""
        out = []
        start = 0
        for level in Frontier.levels(size):
            out.append((level, start >> level))
            start += 1 << level
        return out

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the perfect inner nodes completed by it as
        ``(level, index, hash)`` (level >= 1; index counts subtrees of that level from 0)."""
        completed = []
        self.hashes.append(leaf)
        self.size += 1
        level = 0
        while self.size >> level & 1 == 0:
            right = self.hashes.pop()
            left = self.hashes.pop()
            level += 1
            merged = node_hash(left, right)
            self.hashes.append(merged)
            completed.append((level, (self.size >> level) - 1, merged))
        return completed

    def append_perfect(self, level: int, digest: bytes) -> None:
        """Add a whole perfect subtree of 2**level leaves at once; the tree's size must be a
        multiple of 2**level and hold no smaller subtree (as after appending whole chunks)."""
        if self.size & ((1 << level) - 1):
            raise ValueError("a perfect subtree must start at a multiple of its size")
        self.hashes.append(digest)
        self.size += 1 << level
        while self.size >> level & 1 == 0:
            right = self.hashes.pop()
            left = self.hashes.pop()
            self.hashes.append(node_hash(left, right))
            level += 1

    def root(self) -> bytes:
        """The tree head hash (``MTH``) of the leaves appended so far."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = node_hash(left, root)
        return root


def perfect_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every aligned perfect subtree over ``leaves``: ``levels[k][i]`` is the hash of leaves
    ``i * 2**k`` to ``(i + 1) * 2**k - 1`` (a trailing odd node is not promoted). Built level
    by level in tight loops: the bulk form of :class:`Frontier` for verifiers."""
    sha256 = hashlib.sha256
    levels = [list(leaves)]
    level = levels[0]
    while len(level) > 1:
        level = [
            sha256(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        levels.append(level)
    return levels


def root_from_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """``MTH`` of a sequence of leaf hashes, in O(log n) memory."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def perfect_nodes_for_range(start: int, end: int) -> list[tuple[int, int]]:
    """The aligned perfect subtrees whose hashes give ``MTH(D[start:end])`` by the RFC's split,
    as ``(level, index)``; ``start`` must be a multiple of the largest power of two that fits
    (always true for the ranges RFC 9162's proof algorithms visit)."""
    out: list[tuple[int, int]] = []
    while end > start:
        size = end - start
        if size & (size - 1) == 0:
            level = size.bit_length() - 1
            out.append((level, start >> level))
            break
        k = largest_power_of_two_below(size)
        level = k.bit_length() - 1
        out.append((level, start >> level))
        start += k
    return out


def subtree_from_perfect(perfect: Callable[[int, int], bytes]) -> Subtree:
    """A ``subtree(start, end)`` built on ``perfect(level, index)``, the hash of an aligned
    perfect subtree (level 0 = the leaf hashes themselves)."""

    def subtree(start: int, end: int) -> bytes:
        nodes = perfect_nodes_for_range(start, end)
        root = perfect(*nodes[-1])
        for level, index in reversed(nodes[:-1]):
            root = node_hash(perfect(level, index), root)
        return root

    return subtree


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(m, D[0:n])``: the audit path of leaf ``index`` in a tree of
    ``size`` leaves, nearest the leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    # Iterative form of the recursion: walk down, collect siblings, reverse at the end.
    while end - start > 1:
        k = largest_power_of_two_below(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[0:n])``: proof that the tree of ``first`` leaves is a
    prefix of the tree of ``second`` leaves (empty when ``first`` is 0 or equals ``second``)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    proof: list[bytes] = []
    start, end, whole = 0, second, True
    m = first
    # SUBPROOF(m, D[start:end], whole), iteratively; m is relative to start.
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(subtree(start, end))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start += k
            m -= k
            whole = False
    proof.reverse()
    return proof


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size or any(len(p) != 32 for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
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
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree ``(first, first_root)`` is a prefix of
    ``(second, second_root)``?"""
    if not 0 <= first <= second or any(len(p) != 32 for p in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        # Every tree extends the empty one; RFC 9162 gives no proof for it.
        return not proof and first_root == EMPTY_ROOT
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is itself a subtree
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
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
    return sn == 0 and fr == first_root and sr == second_root
