"""The sorted heads tree (spec section 14.2, heads v1): the heads of a domain's subject logs as leaves sorted by
``subject_key``, as windows carried them before the indexed heads tree (``heads``); an inclusion proof
gives a subject's head, two adjacent leaves prove it has no log. Pure, no I/O."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from .errors import HistoryError, MalformedReceiptError
from .hashing import leaf_hash
from .heads import subject_key
from .logs import EMPTY_ROOT
from .merkle import MerkleTree, root_from_path


def heads_leaf(key: bytes, size: int, root: bytes) -> bytes:
    """A heads-tree leaf value: key (32) || size (8, big-endian) || log root (32)."""
    return key + size.to_bytes(8, "big") + root


class HeadsTree:
    """The heads of every subject log of a domain as of one window, sorted by ``subject_key``."""

    def __init__(self, heads: Mapping[str, tuple[int, bytes]]) -> None:
        self._items = sorted((subject_key(s), n, r) for s, (n, r) in heads.items() if n > 0)
        self.keys = [k for k, _, _ in self._items]
        self.leaves = [heads_leaf(k, n, r) for k, n, r in self._items]
        self._tree = MerkleTree.from_commitments(self.leaves) if self.leaves else None

    @property
    def size(self) -> int:
        """Number of subjects with a log."""
        return len(self.leaves)

    @property
    def root(self) -> bytes:
        """The commitment anchored with the window."""
        return self._tree.root if self._tree is not None else EMPTY_ROOT

    def _member(self, index: int) -> dict[str, Any]:
        assert self._tree is not None
        key, size, root = self._items[index]
        return {
            "index": index,
            "key": key.hex(),
            "size": size,
            "root": root.hex(),
            "path": [h.hex() for _, h in self._tree.audit_path(index)],
        }

    def prove(self, subject: str) -> dict[str, Any]:
        """``{"member": ...}`` for a subject with a log, else ``{"absent": {"left", "right"}}``."""
        key = subject_key(subject)
        i = bisect.bisect_left(self.keys, key)
        if i < self.size and self.keys[i] == key:
            return {"member": self._member(i)}
        return {
            "absent": {
                "left": self._member(i - 1) if i > 0 else None,
                "right": self._member(i) if i < self.size else None,
            }
        }


def _leaf_of(member: Any, where: str) -> tuple[int, bytes, int, bytes, list[bytes]]:
    if not isinstance(member, Mapping) or set(member) != {"index", "key", "size", "root", "path"}:
        raise MalformedReceiptError(f"{where}: expected index, key, size, root and path")
    try:
        key, root = bytes.fromhex(member["key"]), bytes.fromhex(member["root"])
        path = [bytes.fromhex(h) for h in member["path"]]
    except (TypeError, ValueError):
        raise MalformedReceiptError(f"{where}: key, root and path are hex") from None
    index, size = member["index"], member["size"]
    if type(index) is not int or type(size) is not int or index < 0 or size < 1 or len(key) != 32 or len(root) != 32:
        raise MalformedReceiptError(f"{where}: bad index, size, key or root")
    if any(len(h) != 32 for h in path):
        raise MalformedReceiptError(f"{where}: path hashes are 32 bytes")
    return index, key, size, root, path


def is_indexed_proof(proof: Any) -> bool:
    """Whether a head proof is of the indexed heads tree (spec section 14.5) rather than the sorted one."""
    if not isinstance(proof, Mapping):
        return False
    member, absent = proof.get("member"), proof.get("absent")
    return (isinstance(member, Mapping) and "next" in member) or (isinstance(absent, Mapping) and "low" in absent)


def check_heads_proof(subject: str, proof: Any, heads_root: bytes, heads_size: int) -> tuple[int, bytes]:
    """The subject's (log size, log root) under an anchored heads commitment ((0, EMPTY_ROOT): no log)."""
    key = subject_key(subject)

    def root_of(member: Any, where: str) -> tuple[int, bytes, int, bytes]:
        index, k, size, root, path = _leaf_of(member, where)
        if index >= heads_size:
            raise HistoryError(f"{where}: index {index} outside a heads tree of {heads_size}")
        try:
            got = root_from_path(leaf_hash(heads_leaf(k, size, root)), index, heads_size, path)
        except ValueError as exc:
            raise HistoryError(f"{where}: {exc}") from None
        if got != heads_root:
            raise HistoryError(f"tampered head proof: {where} does not lead to the anchored heads root")
        return index, k, size, root

    if not isinstance(proof, Mapping) or len(proof) != 1:
        raise MalformedReceiptError('head proof: expected {"member": ...} or {"absent": ...}')
    if "member" in proof:
        _, k, size, root = root_of(proof["member"], "head proof")
        if k != key:
            raise HistoryError("head proof: the proven leaf is another subject's")
        return size, root
    absent = proof.get("absent")
    if not isinstance(absent, Mapping) or set(absent) != {"left", "right"}:
        raise MalformedReceiptError("head proof: absent needs left and right (null at an end)")
    left = None if absent["left"] is None else root_of(absent["left"], "absence proof (left)")
    right = None if absent["right"] is None else root_of(absent["right"], "absence proof (right)")
    if heads_size == 0:  # root_of refused any neighbour: no index is below 0
        if heads_root != EMPTY_ROOT:
            raise HistoryError("absence proof: the window's heads tree has no leaves but a root that is not empty")
        return 0, EMPTY_ROOT
    if left is None and (right is None or right[0] != 0):
        raise HistoryError("absence proof: without a left neighbour the right one must be leaf 0")
    if right is None and (left is None or left[0] != heads_size - 1):
        raise HistoryError("absence proof: without a right neighbour the left one must be the last leaf")
    if left is not None and right is not None and right[0] != left[0] + 1:
        raise HistoryError("absence proof: the neighbours are not adjacent leaves")
    if (left is not None and not left[1] < key) or (right is not None and not key < right[1]):
        raise HistoryError("absence proof: the subject's key is not between the neighbours")
    return 0, EMPTY_ROOT
