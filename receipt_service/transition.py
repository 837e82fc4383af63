"""Transition proofs of the indexed heads tree (spec §14.6), service side: pure, no I/O.

A window's heads tree is the tip's with some logs grown and the window's new subjects appended in
ascending key order (``successor_heads``); ``build_transition`` proves that to the chaincode, with each
grown log's consistency proof from ``consistency_from_frontier`` (the service keeps a log's compact
range, not its entries).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads
from receipt_verifier.merkle import MerkleTree


def consistency_from_frontier(
    frontier: Sequence[bytes], old_size: int, new_leaf_values: Sequence[bytes]
) -> list[bytes]:
    """The RFC 9162 consistency proof from a log (its compact range ``frontier``) to it extended by the values.

    ``frontier`` holds the roots of the perfect subtrees that make up the old log, largest first (as
    ``logs.frontier_append`` keeps it); the new entries are leaf values, hashed here.
    """
    if old_size < 1:
        raise ValueError(f"a consistency proof starts from a log of at least one entry, not {old_size}")
    if len(frontier) != old_size.bit_count():
        raise ValueError(f"a log of {old_size} entries has a compact range of {old_size.bit_count()} subtrees")
    old: dict[tuple[int, int], bytes] = {}
    start = 0
    for width, node in zip(_set_bits_first(old_size), frontier, strict=True):
        old[(start, width)] = node
        start += width
    new = [leaf_hash(v) for v in new_leaf_values]

    def subtree(lo: int, hi: int) -> bytes:
        if hi <= old_size:
            h = old.get((lo, hi - lo))
            if h is None:
                raise ValueError(f"subtree [{lo}, {hi}) of the old log is not in its compact range")
            return h
        if lo >= old_size:
            return MerkleTree.from_leaf_hashes(new[lo - old_size : hi - old_size]).root
        raise ValueError(f"subtree [{lo}, {hi}) straddles the old log's end {old_size}")

    proof: list[bytes] = []
    lo, hi, m, complete = 0, old_size + len(new), old_size, True
    while m != hi - lo:  # RFC 9162 SUBPROOF, unrolled as in merkle.consistency_proof
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(subtree(lo, hi))
    proof.reverse()
    return proof


def _set_bits_first(n: int) -> list[int]:
    """The powers of two that sum to ``n``, largest first."""
    return [1 << b for b in reversed(range(n.bit_length())) if n >> b & 1]


def successor_heads(old: IndexedHeads, heads: Mapping[bytes, tuple[int, bytes]]) -> IndexedHeads:
    """``old`` with the logs in ``heads`` (key: (size, root)) updated, and its new keys appended by key ascending."""
    entries = [(k, *heads.get(k, (n, r))) for k, n, r in old.entries()]
    entries += [(k, *heads[k]) for k in sorted(k for k in heads if old.index_of(k) is None)]
    return IndexedHeads(entries)


def transition_nodes(old: IndexedHeads, changed: Sequence[int]) -> list[list[Any]]:
    """``[start, width, hex]`` for each maximal subtree of ``old`` without a ``changed`` (ascending) index."""
    out: list[list[Any]] = []

    def walk(lo: int, hi: int, a: int, b: int) -> None:
        width = hi - lo
        if a == b and width & (width - 1) == 0:
            out.append([lo, width, old.node(lo, width).hex()])
            return
        if width == 1:
            return
        k = 1 << ((width - 1).bit_length() - 1)
        m = bisect.bisect_left(changed, lo + k, a, b)
        walk(lo, lo + k, a, m)
        walk(lo + k, hi, m, b)

    walk(0, old.size, 0, len(changed))
    return out


def changed_entry(old: IndexedHeads, new: IndexedHeads, index: int, consistency: Sequence[bytes]) -> dict[str, Any]:
    """A ``changed`` member of a transition proof: leaf ``index``'s old value and its log's new head."""
    _, _, new_size, new_root = new.leaf(index)
    return old.leaf_fields(index) | {
        "new_size": new_size,
        "new_root": new_root.hex(),
        "consistency": [h.hex() for h in consistency],
    }


def build_transition(old: IndexedHeads, new: IndexedHeads, consistency: Mapping[bytes, list[bytes]]) -> dict[str, Any]:
    """The §14.6 transition proof from ``old`` to ``new`` (``old`` with logs grown and keys appended).

    ``consistency[key]`` is each grown log's consistency proof. A transition without any change
    gives the empty proof (``changed``, ``inserted`` and ``nodes`` empty).
    """
    n_old, n_new = old.size, new.size
    if n_new < n_old:
        raise ValueError(f"the new heads have {n_new} leaves, fewer than the old {n_old}")
    changed: list[dict[str, Any]] = []
    for i in range(n_old):
        if old.value(i) == new.value(i):
            continue
        key, _, size, root = old.leaf(i)
        new_key, _, new_size, new_root = new.leaf(i)
        if new_key != key:
            raise ValueError(f"leaf {i} holds another key in the new heads: leaves moved")
        if new_size < size or (new_size == size and new_root != root):
            raise ValueError(f"the log of key {key.hex()} did not only grow ({size} -> {new_size} records)")
        proof: list[bytes] = []
        if new_size > size:
            if key not in consistency:
                raise ValueError(f"no consistency proof for the grown log of key {key.hex()}")
            proof = consistency[key]
        changed.append(changed_entry(old, new, i, proof))
    inserted: list[dict[str, Any]] = []
    previous: bytes | None = None
    for j in range(n_old, n_new):
        key, _, size, root = new.leaf(j)
        if previous is not None and key <= previous:
            raise ValueError("the new keys are not appended in ascending key order")
        if old.index_of(key) is not None:
            raise ValueError(f"key {key.hex()} is appended but was already in the old heads")
        low = old.low_index(key)
        if previous is not None and previous > old.leaf(low)[0]:
            low = j - 1
        inserted.append({"key": key.hex(), "low": low, "size": size, "root": root.hex()})
        previous = key
    indexes = [c["index"] for c in changed]
    nodes = transition_nodes(old, indexes) if changed or inserted else []
    return {"old_size": n_old, "new_size": n_new, "changed": changed, "inserted": inserted, "nodes": nodes}
