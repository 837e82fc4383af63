"""Building transition proofs (spec §14.6): consistency proofs from a log's compact range, and the proof's parts."""

from __future__ import annotations

import hashlib
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_service.transition import (
    build_transition,
    consistency_from_frontier,
    successor_heads,
    transition_nodes,
)
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads, check_transition, empty_heads, subject_key
from receipt_verifier.logs import frontier_append
from receipt_verifier.merkle import MerkleTree, consistency_proof, verify_consistency


def _values(n: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(salt + i.to_bytes(4, "big")).digest() for i in range(n)]


def _frontier(values: list[bytes]) -> list[bytes]:
    frontier: list[bytes] = []
    for i, v in enumerate(values):
        frontier = frontier_append(frontier, i, v)
    return frontier


@settings(max_examples=200)
@given(st.integers(1, 300), st.integers(0, 300))
def test_consistency_from_frontier_equals_the_full_tree_proof(old_size: int, extra: int) -> None:
    values = _values(old_size + extra)
    got = consistency_from_frontier(_frontier(values[:old_size]), old_size, values[old_size:])
    assert got == consistency_proof([leaf_hash(v) for v in values], old_size)
    old_root = MerkleTree.from_commitments(values[:old_size]).root
    verify_consistency(old_size, len(values), old_root, MerkleTree.from_commitments(values).root, got)


def test_consistency_from_frontier_refuses_a_wrong_range() -> None:
    values = _values(6)
    frontier = _frontier(values[:5])  # 4 + 1
    with pytest.raises(ValueError, match="compact range of 2 subtrees"):
        consistency_from_frontier(frontier[:1], 5, values[5:])
    with pytest.raises(ValueError, match="at least one entry"):
        consistency_from_frontier([], 0, values)
    assert consistency_from_frontier(frontier, 5, []) == []
    # a corrupted range gives a proof that does not verify against the true old root
    bad = consistency_from_frontier([frontier[0], leaf_hash(b"x")], 5, values[5:])
    with pytest.raises(ValueError):
        verify_consistency(
            5, 6, MerkleTree.from_commitments(values[:5]).root, MerkleTree.from_commitments(values).root, bad
        )


def _heads(n: int, seed: int) -> IndexedHeads:
    rng = random.Random(seed)
    return IndexedHeads([(subject_key(f"b-{seed}-{i}"), rng.randint(1, 9), rng.randbytes(32)) for i in range(n)])


@settings(max_examples=60)
@given(st.integers(0, 80), st.integers(0, 2**32), st.lists(st.integers(1, 80), max_size=10), st.integers(0, 10))
def test_nodes_are_the_maximal_subtrees_without_a_changed_leaf(
    n: int, seed: int, changed_at: list[int], n_new: int
) -> None:
    old = _heads(n, seed)
    rng = random.Random(seed)
    updates = {old.leaf(i)[0]: (old.leaf(i)[2], rng.randbytes(32)) for i in changed_at if i < old.size}
    grown = {k: (size + 1, root) for k, (size, root) in updates.items()}
    new = successor_heads(old, grown | {subject_key(f"new-{seed}-{j}"): (1, b"\x07" * 32) for j in range(n_new)})
    proof = build_transition(old, new, {key: [b"\x00" * 32] for key in grown})
    changed = {c["index"] for c in proof["changed"]}
    assert changed == {i for i in range(old.size) if old.value(i) != new.value(i)}
    if not changed and not proof["inserted"]:
        assert proof["nodes"] == []
        return
    covered: list[int] = []
    for start, width, h in proof["nodes"]:
        assert width & (width - 1) == 0 and start % width == 0
        assert not changed & set(range(start, start + width))
        assert (
            bytes.fromhex(h)
            == MerkleTree.from_leaf_hashes([leaf_hash(old.value(i)) for i in range(start, start + width)]).root
        )
        parent = start - start % (2 * width)
        assert parent + 2 * width > old.size or changed & set(range(parent, parent + 2 * width))  # maximal
        covered += range(start, start + width)
    assert sorted(covered + sorted(changed)) == list(range(old.size))  # nodes and changed leaves tile the tree
    assert [s for s, _, _ in proof["nodes"]] == sorted(s for s, _, _ in proof["nodes"])


@settings(max_examples=60)
@given(st.integers(0, 50), st.integers(0, 2**32), st.integers(1, 12))
def test_each_low_leaf_is_the_largest_smaller_key(n: int, seed: int, n_new: int) -> None:
    old = _heads(n, seed)
    new_keys = sorted(subject_key(f"low-{seed}-{j}") for j in range(n_new))
    new = successor_heads(old, dict.fromkeys(new_keys, (1, b"\x01" * 32)))
    proof = build_transition(old, new, {})
    keys = [old.leaf(i)[0] for i in range(old.size)]
    for j, x in enumerate(proof["inserted"]):
        assert x["key"] == new_keys[j].hex()
        candidates = keys + new_keys[:j]
        want = max(k for k in candidates if k < new_keys[j])
        assert x["low"] == candidates.index(want)
    assert check_transition(old.root, old.size, new.root, new.size, proof).inserted == n_new


def test_successor_heads_appends_new_subjects_by_key() -> None:
    old = _heads(5, 1)
    first = old.leaf(1)[0]
    new_keys = [subject_key(f"s-{i}") for i in range(4)]
    new = successor_heads(old, {first: (20, b"\x02" * 32)} | {k: (1, b"\x03" * 32) for k in new_keys})
    assert [new.leaf(i)[0] for i in range(6)] == [old.leaf(i)[0] for i in range(6)]
    assert new.leaf(1)[2:] == (20, b"\x02" * 32)
    assert [new.leaf(i)[0] for i in range(6, 10)] == sorted(new_keys)


def test_build_transition_refuses_what_is_not_growth() -> None:
    keys = [subject_key(f"r-{i}") for i in range(4)]
    old = IndexedHeads([(k, 3, b"\x01" * 32) for k in keys])
    cases = [
        (IndexedHeads([(k, 3, b"\x01" * 32) for k in keys[:3]]), "fewer than the old"),
        (IndexedHeads([(k, 3, b"\x01" * 32) for k in reversed(keys)]), "leaves moved"),
        (successor_heads(old, {keys[0]: (2, b"\x01" * 32)}), "did not only grow"),
        (successor_heads(old, {keys[0]: (3, b"\x02" * 32)}), "did not only grow"),
        (successor_heads(old, {keys[0]: (4, b"\x02" * 32)}), "no consistency proof"),
        (
            IndexedHeads(
                [(k, 3, b"\x01" * 32) for k in keys]
                + [(b"\x09" * 32, 1, b"\x01" * 32), (b"\x08" * 32, 1, b"\x01" * 32)]
            ),
            "ascending key order",
        ),
    ]
    for new, match in cases:
        with pytest.raises(ValueError, match=match):
            build_transition(old, new, {})
    assert [n[:2] for n in transition_nodes(old, [])] == [[0, 4], [4, 1]]
    with pytest.raises(ValueError, match="not a subtree"):
        old.node(1, 2)


def test_heads_of_100000_subjects_are_built_quickly() -> None:
    rng = random.Random(5)
    entries = [(rng.randbytes(32), 1, rng.randbytes(32)) for _ in range(100_000)]
    start = time.perf_counter()
    heads = IndexedHeads(entries)
    elapsed = time.perf_counter() - start
    assert heads.size == 100_001
    assert elapsed < 5, f"{elapsed:.2f} s"  # about 0.3 s on one core; the bound only catches a quadratic slip


def test_genesis_from_the_sentinel_alone() -> None:
    keys = sorted(subject_key(f"g-{i}") for i in range(3))
    new = successor_heads(empty_heads(), dict.fromkeys(keys, (1, b"\x05" * 32)))
    proof = build_transition(empty_heads(), new, {})
    assert proof["old_size"] == 1 and proof["new_size"] == 4
    assert [c["index"] for c in proof["changed"]] == [0] and proof["nodes"] == []
    assert [x["low"] for x in proof["inserted"]] == [0, 1, 2]
    summary = check_transition(empty_heads().root, 1, new.root, 4, proof)
    assert summary.logs == tuple((k, 0, 1) for k in keys)
