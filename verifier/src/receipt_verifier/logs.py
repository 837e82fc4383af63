"""A subject's log (spec section 14.1): its entries (each a record's v2 leaf value), its RFC 6962 root, and
its compact range (the roots of the perfect subtrees it is made of), extended one entry at a time: pure,
no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .hashing import bound_commitment, leaf_hash, node_hash
from .merkle import MerkleTree
from .model import Binding

EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962: the hash of an empty tree


def log_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 root over a log's entries (each a v2 leaf value); the empty log has ``EMPTY_ROOT``."""
    return MerkleTree.from_commitments(leaves).root if leaves else EMPTY_ROOT


def frontier_append(frontier: Sequence[bytes], size: int, leaf: bytes) -> list[bytes]:
    """Append one entry (its leaf value) to a log's compact range: the roots of the perfect subtrees
    that make up its first ``size`` entries, largest first (one per set bit of ``size``)."""
    out = list(frontier)
    node = leaf_hash(leaf)
    while size & 1:
        node = node_hash(out.pop(), node)
        size >>= 1
    out.append(node)
    return out


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The RFC 6962 root of a log from its compact range (equal to ``log_root`` of its entries)."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for node in reversed(frontier[:-1]):
        acc = node_hash(node, acc)
    return acc


def record_leaf(nonce: bytes, proof_id: bytes, record_hash: bytes, domain: str, subject: str, seq: int) -> bytes:
    """The log entry of a record at position ``seq``: its v2 leaf value."""
    return bound_commitment(nonce, proof_id, record_hash, Binding(domain, subject, seq).digest())
