"""Packed window trees equal the verifier's reference tree; large windows go through the worker process."""

from __future__ import annotations

import os

import pytest

from receipt_service.trees import PackedTree, TreeBuilder, TreeCache, build_packed, pack_tree
from receipt_verifier.hashing import bound_commitment, salted_commitment
from receipt_verifier.merkle import MerkleTree


def _columns(n: int, bound: bool = False) -> tuple[bytes, bytes, bytes, bytes]:
    return os.urandom(16 * n), os.urandom(32 * n), os.urandom(16 * n), os.urandom(32 * n) if bound else b""


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 257])
def test_packed_tree_matches_reference(size: int) -> None:
    values = [os.urandom(32) for _ in range(size)]
    packed, ref = pack_tree(values), MerkleTree.from_commitments(values)
    assert packed.root == ref.root and packed.size == size
    for i in range(size):
        assert packed.audit_path(i) == ref.audit_path(i)
        assert packed.leaf(i) == ref.levels[0][i]
    with pytest.raises(IndexError):
        packed.audit_path(size)


def test_commitments_follow_the_spec() -> None:
    pids, hashes, nonces, _ = _columns(3)
    trees = build_packed([(pids, hashes, nonces, b"")], 2)
    assert [t.size for t in trees] == [2, 1]
    c2 = salted_commitment(nonces[32:48], pids[32:48], hashes[64:96])
    assert trees[1].root == MerkleTree.from_commitments([c2]).root


def test_v2_commitments_bind_each_item_to_its_own_binding() -> None:
    pids, hashes, nonces, bindings = _columns(2, bound=True)
    (tree,) = build_packed([(pids, hashes, nonces, bindings)], 8)
    c = [
        bound_commitment(
            nonces[16 * i : 16 * i + 16],
            pids[16 * i : 16 * i + 16],
            hashes[32 * i : 32 * i + 32],
            bindings[32 * i : 32 * i + 32],
        )
        for i in range(2)
    ]
    assert tree.root == MerkleTree.from_commitments(c).root
    swapped = bindings[32:] + bindings[:32]
    assert build_packed([(pids, hashes, nonces, swapped)], 8)[0].root != tree.root


async def test_builder_uses_a_process_for_large_windows_with_the_same_result() -> None:
    cols = [_columns(300), _columns(200, bound=True)]
    builder = TreeBuilder(threshold=100)
    try:
        in_process: list[PackedTree] = await builder.build(cols, 128)
        assert builder._pool is not None  # the worker process did it
    finally:
        builder.close()
    assert in_process == build_packed(cols, 128)
    assert [t.size for t in in_process] == [128, 128, 128, 116]


def test_the_tree_cache_evicts_the_least_recently_used() -> None:
    cache = TreeCache(size=2)
    a, b, c = (pack_tree([bytes([i]) * 32]) for i in range(3))
    cache.put(("w", 0), a)
    cache.put(("w", 1), b)
    assert cache.get(("w", 0)) is a  # now the most recent
    cache.put(("w", 2), c)
    assert cache.get(("w", 1)) is None and cache.get(("w", 0)) is a and cache.get(("w", 2)) is c
    cache.put(("w", 2), c)  # again: still two
    assert cache.get(("w", 0)) is a
    assert TreeCache().get(("x", 0)) is None
