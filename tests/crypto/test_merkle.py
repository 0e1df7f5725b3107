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


def ref_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, consistency_path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step as the RFC words it (written from its text, sharing no
    code with the module). The RFC's algorithm is for 0 < first < second; equal sizes are
    consistent exactly when the roots are equal (no proof), as §2.1.4.1 gives an empty one."""
    if first == second:
        return not consistency_path and first_hash == second_hash
    if not 0 < first < second:
        return False

    def hash_children(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

    def lsb(value: int) -> int:
        return value & 1

    path = list(consistency_path)
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        return False
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while lsb(fn):
        fn, sn = fn >> 1, sn >> 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # If LSB(fn) is set, or if fn is equal to sn, then:
        if lsb(fn) or fn == sn:
            fr = hash_children(c, fr)  # 1. Set fr to HASH(0x01 || c || fr).
            sr = hash_children(c, sr)  # 2. Set sr to HASH(0x01 || c || sr).
            # 3. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #    either LSB(fn) is set or fn is 0.
            if not lsb(fn):
                while not lsb(fn) and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = hash_children(sr, c)  # Otherwise: set sr to HASH(0x01 || sr || c).
        # Finally, right-shift both fn and sn one time.
        fn, sn = fn >> 1, sn >> 1
    # 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
    return fr == first_hash and sr == second_hash and sn == 0


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
    and every leaf is included in every head covering it, by the reference verifiers."""
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
            assert ref_verify_consistency(m, n, root_m, root_n, proof)
            assert verify_consistency(m, n, root_m, root_n, proof)
            if m < n and proof:
                bad = [bytes(32), *proof[1:]]
                assert not ref_verify_consistency(m, n, root_m, root_n, bad)
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


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=200).flatmap(
        lambda n: st.tuples(st.integers(min_value=1, max_value=n), st.just(n))
    ),
    st.data(),
)
def test_module_consistency_proofs_pass_the_reference_verifier(sizes, data) -> None:
    """The module's proofs between any two sizes are accepted by the RFC text's verifier
    above, and every way of breaking them (a changed proof hash, a dropped or added hash,
    another first size, a rewritten history) is refused by both that verifier and the
    module's own."""
    m, n = sizes
    entries = _entries(n)
    sub = _subtree(entries)
    old_root, new_root = ref_mth(entries[:m]), ref_mth(entries)
    proof = consistency_proof(m, n, sub)
    assert ref_verify_consistency(m, n, old_root, new_root, proof)
    assert verify_consistency(m, n, old_root, new_root, proof)

    def both_refuse(first: int, first_root: bytes, second_root: bytes, path: list[bytes]) -> None:
        assert not ref_verify_consistency(first, n, first_root, second_root, path)
        assert not verify_consistency(first, n, first_root, second_root, path)

    if m < n:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="changed hash")
        changed = [*proof]
        changed[i] = hashlib.sha256(changed[i]).digest()
        both_refuse(m, old_root, new_root, changed)
        both_refuse(m, old_root, new_root, proof[:-1])
        both_refuse(m, old_root, new_root, [*proof, proof[-1]])
        other = data.draw(st.integers(min_value=1, max_value=n - 1), label="other size")
        if ref_mth(entries[:other]) != old_root:
            both_refuse(other, old_root, new_root, proof)
        j = data.draw(st.integers(min_value=0, max_value=m - 1), label="rewritten entry")
        rewritten = [*entries[:j], b"forged", *entries[j + 1 :]]
        both_refuse(m, old_root, ref_mth(rewritten), consistency_proof(m, n, _subtree(rewritten)))
    both_refuse(m, hashlib.sha256(old_root).digest(), new_root, proof)


def test_the_reference_consistency_verifier_accepts_the_rfc_proofs() -> None:
    """The reference verifier against the RFC's own proof construction (§2.1.4.1, ref_subproof),
    exhaustively for small trees: it is a verifier that says yes to the right thing."""
    for n in range(1, 40):
        entries = _entries(n)
        for m in range(1, n + 1):
            proof = ref_subproof(m, entries, True)
            assert ref_verify_consistency(m, n, ref_mth(entries[:m]), ref_mth(entries), proof)
            if m < n:
                assert not ref_verify_consistency(m, n, ref_mth(entries[:m]), ref_mth(entries), [])
