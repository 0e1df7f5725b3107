"""RFC 9162 tree: proofs checked by an independent, plain implementation written here."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from kmsportal.crypto.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# --- the independent reference: RFC 9162 §2.1 as written, recursive, over the entries ------


def ref_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:])).digest()


def ref_verify_inclusion(
    index: int, size: int, leaf: bytes, path: list[bytes], root: bytes
) -> bool:
    """Recomputes the root by walking the RFC's recursion top-down, consuming the path from
    its end (the sibling nearest the root comes last)."""
    if not 0 <= index < size:
        return False
    path = list(path)

    def walk(lo: int, hi: int) -> bytes | None:
        if hi - lo == 1:
            return leaf if lo == index else None
        k = 1
        while k * 2 < hi - lo:
            k *= 2
        if not path:
            return None
        sibling = path.pop()
        if index < lo + k:
            left = walk(lo, lo + k)
            return None if left is None else hashlib.sha256(b"\x01" + left + sibling).digest()
        right = walk(lo + k, hi)
        return None if right is None else hashlib.sha256(b"\x01" + sibling + right).digest()

    got = walk(0, size)
    return got == root and not path


def ref_subproof(m: int, entries: list[bytes], whole: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if whole else [ref_mth(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, entries[:k], whole), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


# --- tests ---------------------------------------------------------------------------------


def _entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    one = leaf_hash(b"")
    assert one.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert root_from_leaf_hashes([one]) == one


def _subtree(entries: list[bytes]):  # type: ignore[no-untyped-def]
    return lambda a, b: ref_mth(entries[a:b])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=12), st.data())
def test_random_appends_and_integrations_give_consistent_heads(batches, data) -> None:
    """Appends in random batches; after each, a head. Every pair of heads is consistent
    and every leaf is included in every head covering it, by the reference verifier."""
    entries: list[bytes] = []
    frontier = Frontier()
    heads: list[tuple[int, bytes]] = []
    for batch in batches:
        for _ in range(batch):
            entry = data.draw(st.binary(max_size=24))
            entries.append(entry)
            frontier.append(leaf_hash(entry))
        heads.append((frontier.size, frontier.root()))
        assert frontier.root() == ref_mth(entries)
    sub = _subtree(entries)
    for i, (m, root_m) in enumerate(heads):
        for n, root_n in heads[i:]:
            proof = consistency_proof(m, n, lambda a, b: sub(a, b))
            assert proof == ref_subproof(m, entries[:n], True) if m < n else proof == []
            assert verify_consistency(m, n, root_m, root_n, proof)
            if m < n and proof:
                bad = [bytes(32), *proof[1:]]
                assert not verify_consistency(m, n, root_m, root_n, bad)
    size, root = heads[-1]
    for index in range(size):
        path = inclusion_proof(index, size, sub)
        leaf = leaf_hash(entries[index])
        assert ref_verify_inclusion(index, size, leaf, path, root)
        assert verify_inclusion(index, size, leaf, path, root)
        assert not verify_inclusion(index, size, leaf_hash(b"forged"), path, root)


def test_rewritten_history_is_not_consistent() -> None:
    entries = _entries(10)
    old_root = ref_mth(entries[:6])
    rewritten = [*entries[:3], b"forged", *entries[4:]]
    proof = consistency_proof(6, 10, _subtree(rewritten))
    assert not verify_consistency(6, 10, old_root, ref_mth(rewritten), proof)


def test_frontier_reports_completed_nodes() -> None:
    frontier = Frontier()
    completed = []
    for i in range(8):
        completed += [(lvl, idx) for lvl, idx, _ in frontier.append(leaf_hash(bytes([i])))]
    assert completed == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
    assert Frontier.positions(13) == [(3, 0), (2, 2), (0, 12)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=5))
def test_bulk_levels_give_the_same_roots_as_appending(size, shift) -> None:
    """What verify_audit does per chunk: perfect subtrees in bulk, heads from them."""
    from kmsportal.crypto.merkle import perfect_levels

    leaves = [leaf_hash(bytes([i % 251, i // 251])) for i in range(size)]
    chunk = 1 << shift
    frontier = Frontier()
    for lo in range(0, size, chunk):
        part = leaves[lo : lo + chunk]
        levels = perfect_levels(part)
        for t in range(1, len(part) + 1):
            inside = Frontier(frontier.size, list(frontier.hashes))
            for level, index in Frontier.positions(t):
                inside.append_perfect(level, levels[level][index])
            assert inside.root() == ref_mth_of_hashes(leaves[: lo + t])
        for level, index in Frontier.positions(len(part)):
            frontier.append_perfect(level, levels[level][index])
    assert frontier.root() == root_from_leaf_hashes(leaves)


def ref_mth_of_hashes(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    left, right = ref_mth_of_hashes(hashes[:k]), ref_mth_of_hashes(hashes[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()
