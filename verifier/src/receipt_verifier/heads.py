"""The indexed heads tree and its transition proofs (spec §14.5-§14.6): pure, hashlib only.

The heads of a domain's subject logs are leaves in insertion order; ``next`` pointers keep the
sorted order, so a leaf never moves. A transition proof shows that a window's heads tree only grew
from the chain tip's: every listed log is an extension of its old self, every new key was absent,
and every other leaf is unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .errors import LimitExceededError, MalformedReceiptError, VerificationError
from .logs import EMPTY_ROOT
from .merkle import MAX_TREE_SIZE, MerkleTree, root_from_path, verify_consistency

ZERO_KEY = bytes(32)  # the sentinel's key, reserved
LEAF_SIZE = 104
MAX_ENTRIES = 1_000_000  # per list of a transition proof
MAX_CONSISTENCY = 128  # hashes of one consistency proof (a log of fewer than 2**64 entries needs far fewer)
MAX_LOG_SIZE = (1 << 64) - 1

_HEX64 = re.compile(r"[0-9a-f]{64}")
_sha256 = hashlib.sha256


class HeadsError(VerificationError):
    """A head proof does not prove the head (or the absence) it claims under the heads root."""


class TransitionError(HeadsError):
    """A transition proof does not show that the heads only grew; the message names the check."""


def subject_key(subject: str) -> bytes:
    """The heads tree's key of a subject: SHA-256 of its UTF-8 form."""
    return _sha256(subject.encode("utf-8")).digest()


def indexed_leaf(key: bytes, next_key: bytes, size: int, root: bytes) -> bytes:
    """A leaf value: key (32) || next (32) || u64be(size) || root (32)."""
    return key + next_key + size.to_bytes(8, "big") + root


SENTINEL = indexed_leaf(ZERO_KEY, ZERO_KEY, 0, EMPTY_ROOT)  # leaf 0 of a domain without subjects


def _leaf_hash(value: bytes) -> bytes:
    return _sha256(b"\x00" + value).digest()


class IndexedHeads:
    """An indexed heads tree: the sentinel, then ``(key, size, root)`` per subject in insertion order."""

    def __init__(self, entries: Sequence[tuple[bytes, int, bytes]]) -> None:
        keys = [ZERO_KEY]
        sizes = [0]
        roots = [EMPTY_ROOT]
        for key, size, root in entries:
            if len(key) != 32 or key == ZERO_KEY or len(root) != 32 or type(size) is not int:
                raise ValueError("a subject's key and root are 32 bytes, the key not all zeros")
            if not 1 <= size <= MAX_LOG_SIZE:
                raise ValueError(f"a subject's log holds 1 to 2**64-1 records, not {size}")
            keys.append(key)
            sizes.append(size)
            roots.append(root)
        self._index = {k: i for i, k in enumerate(keys)}
        if len(self._index) != len(keys):
            raise ValueError("a key appears twice")
        order = sorted(range(len(keys)), key=keys.__getitem__)  # the sentinel sorts first
        nexts = [ZERO_KEY] * len(keys)
        for a, b in pairwise(order):
            nexts[a] = keys[b]
        self._keys, self._sizes, self._roots, self._nexts = keys, sizes, roots, nexts
        self._sorted = [keys[i] for i in order]
        self._sorted_index = order
        self._values = [k + n + s.to_bytes(8, "big") + r for k, n, s, r in zip(keys, nexts, sizes, roots, strict=True)]
        self._tree = MerkleTree.from_commitments(self._values)

    @property
    def root(self) -> bytes:
        """``heads_root``: the RFC 6962 root over the leaf values."""
        return self._tree.root

    @property
    def size(self) -> int:
        """``heads_size``: the number of leaves, the sentinel included."""
        return len(self._keys)

    def index_of(self, key: bytes) -> int | None:
        """The index of the leaf with ``key`` (0 for ``ZERO_KEY``), None if there is none."""
        return self._index.get(key)

    def leaf(self, index: int) -> tuple[bytes, bytes, int, bytes]:
        """Leaf ``index`` as ``(key, next, size, root)``."""
        return self._keys[index], self._nexts[index], self._sizes[index], self._roots[index]

    def value(self, index: int) -> bytes:
        """The 104-byte value of leaf ``index``."""
        return self._values[index]

    def node(self, start: int, width: int) -> bytes:
        """The hash of the perfect subtree over leaves ``[start, start + width)`` (``width`` a power of two)."""
        level = width.bit_length() - 1
        if width < 1 or width & (width - 1) or start % width or start + width > self.size:
            raise ValueError(f"[{start}, {width}] is not a subtree of a tree of {self.size} leaves")
        return self._tree.levels[level][start >> level]

    def entries(self) -> list[tuple[bytes, int, bytes]]:
        """The subjects' ``(key, size, root)`` in insertion order (what the tree was built from)."""
        return list(zip(self._keys[1:], self._sizes[1:], self._roots[1:], strict=True))

    def low_index(self, key: bytes) -> int:
        """The index of the leaf with the largest key below ``key``."""
        return self._sorted_index[bisect.bisect_left(self._sorted, key) - 1]

    def leaf_fields(self, index: int) -> dict[str, Any]:
        """Leaf ``index`` as proofs spell it: ``index``, ``key``, ``next``, ``size``, ``root`` (hex)."""
        key, nxt, size, root = self.leaf(index)
        return {"index": index, "key": key.hex(), "next": nxt.hex(), "size": size, "root": root.hex()}

    def _member(self, index: int) -> dict[str, Any]:
        return self.leaf_fields(index) | {"path": [h.hex() for _, h in self._tree.audit_path(index)]}

    def prove(self, subject: str) -> dict[str, Any]:
        """``{"member": leaf}`` for a subject with a log, else ``{"absent": {"low": leaf}}`` (§14.5)."""
        key = subject_key(subject)
        index = self._index.get(key)
        if index is not None:
            return {"member": self._member(index)}
        return {"absent": {"low": self._member(self.low_index(key))}}


def empty_heads() -> IndexedHeads:
    """The heads of a domain without subjects: the sentinel alone."""
    return IndexedHeads(())


# -- parsing ---------------------------------------------------------------------------------------------------


def _int(value: Any, where: str, top: int) -> int:
    if type(value) is not int or not 0 <= value <= top:
        raise MalformedReceiptError(f"{where} must be an integer from 0 to {top}")
    return value


def _hash(value: Any, where: str) -> bytes:
    if type(value) is not str or not _HEX64.fullmatch(value):
        raise MalformedReceiptError(f"{where} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def _object(value: Any, members: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or value.keys() != members:
        raise MalformedReceiptError(f"{where}: expected exactly the members {', '.join(sorted(members))}")
    return value


def _list(value: Any, where: str, limit: int = MAX_ENTRIES) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedReceiptError(f"{where} must be a list")
    if len(value) > limit:
        raise LimitExceededError(f"{where} holds more than {limit:,} entries")
    return value


_LEAF = frozenset({"index", "key", "next", "size", "root", "path"})


def check_indexed_proof(subject: str, proof: Any, heads_root: bytes, heads_size: int) -> tuple[int, bytes]:
    """The subject's ``(log size, log root)`` under an indexed heads root, ``(0, EMPTY_ROOT)`` if absent."""
    key = subject_key(subject)
    if not isinstance(proof, Mapping) or len(proof) != 1 or not proof.keys() <= {"member", "absent"}:
        raise MalformedReceiptError('head proof: expected {"member": ...} or {"absent": {"low": ...}}')
    if "member" in proof:
        where, leaf = "head proof member", proof["member"]
    else:
        where, leaf = "absence proof low leaf", _object(proof["absent"], frozenset({"low"}), "head proof absent")["low"]
    m = _object(leaf, _LEAF, where)
    index = _int(m["index"], f"{where}.index", MAX_TREE_SIZE)
    size = _int(m["size"], f"{where}.size", MAX_LOG_SIZE)
    k, nxt, root = _hash(m["key"], f"{where}.key"), _hash(m["next"], f"{where}.next"), _hash(m["root"], f"{where}.root")
    path = [_hash(h, f"{where}.path[{i}]") for i, h in enumerate(_list(m["path"], f"{where}.path", 64))]
    if index >= heads_size:
        raise HeadsError(f"{where}: index {index} outside a heads tree of {heads_size}")
    try:
        got = root_from_path(_leaf_hash(indexed_leaf(k, nxt, size, root)), index, heads_size, path)
    except ValueError as exc:
        raise HeadsError(f"{where}: {exc}") from None
    if got != heads_root:
        raise HeadsError(f"tampered head proof: the {where} does not lead to the anchored heads root")
    if (index == 0) != (k == ZERO_KEY):
        raise HeadsError(f"{where}: leaf 0, and only leaf 0, is the sentinel")
    if "member" in proof:
        if k != key:
            raise HeadsError("head proof: the proven leaf is another subject's")
        if size == 0:
            raise HeadsError("head proof: the member leaf holds no record")
        return size, root
    if not (k < key and (nxt == ZERO_KEY or key < nxt)):
        raise HeadsError("absence proof: the low leaf does not bracket the subject's key")
    return 0, EMPTY_ROOT


# -- transition proofs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitionSummary:
    """What a transition changed: ``logs`` holds ``(key, old size, new size)`` per grown or new log.

    Grown logs come first, by leaf index, then the new subjects (old size 0) by key.
    """

    updated: int
    inserted: int
    logs: tuple[tuple[bytes, int, int], ...]


@dataclass(frozen=True)
class _Changed:
    index: int
    key: bytes
    next: bytes
    size: int
    root: bytes
    new_size: int
    new_root: bytes
    consistency: tuple[bytes, ...]


_TRANSITION = frozenset({"old_size", "new_size", "changed", "inserted", "nodes"})
_CHANGED = frozenset({"index", "key", "next", "size", "root", "new_size", "new_root", "consistency"})
_INSERTED = frozenset({"key", "low", "size", "root"})


def _parse_changed(value: Any, i: int) -> _Changed:
    where = f"transition proof: changed[{i}]"
    c = _object(value, _CHANGED, where)
    proof = _list(c["consistency"], f"{where}.consistency", MAX_CONSISTENCY)
    return _Changed(
        index=_int(c["index"], f"{where}.index", MAX_TREE_SIZE),
        key=_hash(c["key"], f"{where}.key"),
        next=_hash(c["next"], f"{where}.next"),
        size=_int(c["size"], f"{where}.size", MAX_LOG_SIZE),
        root=_hash(c["root"], f"{where}.root"),
        new_size=_int(c["new_size"], f"{where}.new_size", MAX_LOG_SIZE),
        new_root=_hash(c["new_root"], f"{where}.new_root"),
        consistency=tuple(_hash(h, f"{where}.consistency[{j}]") for j, h in enumerate(proof)),
    )


def _parse_inserted(value: Any, i: int) -> tuple[bytes, int, int, bytes]:
    where = f"transition proof: inserted[{i}]"
    x = _object(value, _INSERTED, where)
    return (
        _hash(x["key"], f"{where}.key"),
        _int(x["low"], f"{where}.low", MAX_TREE_SIZE),
        _int(x["size"], f"{where}.size", MAX_LOG_SIZE),
        _hash(x["root"], f"{where}.root"),
    )


def _parse_node(value: Any, i: int) -> tuple[int, int, bytes]:
    where = f"transition proof: nodes[{i}]"
    if not isinstance(value, list) or len(value) != 3:
        raise MalformedReceiptError(f"{where} must be [start, width, hash]")
    start = _int(value[0], f"{where} start", MAX_TREE_SIZE)
    width = _int(value[1], f"{where} width", MAX_TREE_SIZE)
    return start, width, _hash(value[2], f"{where} hash")


def _tree_root(
    size: int, known: Sequence[int], leaf: Callable[[int], bytes], nodes: Mapping[tuple[int, int], bytes]
) -> tuple[bytes, set[tuple[int, int]]]:
    """MTH over ``[0, size)``: ``known`` (ascending) leaves from ``leaf``, every other subtree from ``nodes``."""
    used: set[tuple[int, int]] = set()

    def mth(lo: int, hi: int, a: int, b: int) -> bytes:
        width = hi - lo
        if a == b and width & (width - 1) == 0:
            h = nodes.get((lo, width))
            if h is None:
                raise TransitionError(f"the proof lacks node [{lo}, {width}]")
            used.add((lo, width))
            return h
        if width == 1:
            return leaf(lo)
        k = 1 << ((width - 1).bit_length() - 1)
        m = bisect.bisect_left(known, lo + k, a, b)
        return _sha256(b"\x01" + mth(lo, lo + k, a, m) + mth(lo + k, hi, m, b)).digest()

    return mth(0, size, 0, len(known)), used


def check_transition(old_root: bytes, old_size: int, new_root: bytes, new_size: int, proof: Any) -> TransitionSummary:
    """Checks 1-6 of §14.6, in order: the heads ``(new_root, new_size)`` only grew from ``(old_root, old_size)``."""
    p = _object(proof, _TRANSITION, "transition proof")
    p_old = _int(p["old_size"], "transition proof: old_size", MAX_TREE_SIZE)
    p_new = _int(p["new_size"], "transition proof: new_size", MAX_TREE_SIZE)
    changed = [_parse_changed(c, i) for i, c in enumerate(_list(p["changed"], "transition proof: changed"))]
    inserted = [_parse_inserted(x, i) for i, x in enumerate(_list(p["inserted"], "transition proof: inserted"))]
    nodes = [_parse_node(n, i) for i, n in enumerate(_list(p["nodes"], "transition proof: nodes"))]

    # 1. shape
    if p_old < 1:
        raise TransitionError("old_size must be at least 1 (the sentinel)")
    if p_new != p_old + len(inserted):
        raise TransitionError(
            f"new_size is not old_size plus the inserted count ({p_new} != {p_old} + {len(inserted)})"
        )
    if p_old != old_size:
        raise TransitionError(f"old_size is not the tip's heads size ({p_old}, the tip has {old_size})")
    if p_new != new_size:
        raise TransitionError(f"new_size is not the window's heads size ({p_new}, the window has {new_size})")

    # 2. order
    indexes = [c.index for c in changed]
    if any(b <= a for a, b in pairwise(indexes)):
        raise TransitionError("changed leaves repeat or are out of order")
    if indexes and indexes[-1] >= p_old:
        raise TransitionError(f"changed leaves repeat or are out of order: index {indexes[-1]} is past the old tree")
    keys = [x[0] for x in inserted]
    if any(b <= a for a, b in pairwise(keys)):
        raise TransitionError("inserted keys repeat or are out of order")
    if keys and keys[0] == ZERO_KEY:
        raise TransitionError("inserted keys repeat or are out of order: the zero key is reserved")
    if any(b[0] <= a[0] for a, b in pairwise(nodes)):
        raise TransitionError("nodes repeat or are out of order")
    node_map = {(s, w): h for s, w, h in nodes}

    # 3. old root (a proof without changes or nodes claims the heads did not change: see step 6)
    nothing = not changed and not inserted and not nodes
    by_index = {c.index: c for c in changed}
    if not nothing:

        def old_leaf(i: int) -> bytes:
            c = by_index[i]
            return _leaf_hash(indexed_leaf(c.key, c.next, c.size, c.root))

        got, used = _tree_root(p_old, indexes, old_leaf, node_map)
        if got != old_root:
            raise TransitionError("the old heads root is not the tip's")
        for s, w, _ in nodes:
            if (s, w) not in used:
                raise TransitionError(f"node [{s}, {w}] is not used")

    # 4. each log only grew
    logs: list[tuple[bytes, int, int]] = []
    for c in changed:
        k = c.key.hex()
        if c.new_size < c.size:
            raise TransitionError(f"the log of key {k} shrank from {c.size} to {c.new_size} records")
        if c.new_size == c.size and (c.new_root != c.root or c.consistency):
            raise TransitionError(f"the log of key {k} changed without growing")
        if c.index == 0 and c.new_size != 0:
            raise TransitionError("the sentinel leaf cannot hold a log")
        if c.new_size == c.size:
            continue
        if c.size == 0:
            if c.consistency:
                raise TransitionError(f"the consistency proof of key {k} fails: a log of size 0 takes an empty proof")
        else:
            try:
                verify_consistency(c.size, c.new_size, c.root, c.new_root, c.consistency)
            except ValueError as exc:
                raise TransitionError(f"the consistency proof of key {k} fails: {exc}") from None
        logs.append((c.key, c.size, c.new_size))

    # 5. inserts are new
    nexts = {c.index: c.next for c in changed}
    key_at = {c.index: c.key for c in changed}
    for j, (x, low, size, _) in enumerate(inserted):
        if low not in nexts:
            raise TransitionError(f"low leaf {low} is not in the proof")
        low_next = nexts[low]
        if not (key_at[low] < x and (low_next == ZERO_KEY or x < low_next)):
            raise TransitionError(f"key {x.hex()} is not new: low leaf {low} does not bracket it")
        if size < 1:
            raise TransitionError(f"a new subject's log must hold a record (key {x.hex()})")
        nexts[low] = x
        nexts[p_old + j], key_at[p_old + j] = low_next, x
        logs.append((x, 0, size))

    # 6. new root
    if nothing:
        if new_root != old_root:
            raise TransitionError("the new heads root does not follow: a proof without changes keeps the root")
    else:

        def new_leaf(i: int) -> bytes:
            if i >= p_old:
                x, _, size, root = inserted[i - p_old]
                return _leaf_hash(indexed_leaf(x, nexts[i], size, root))
            c = by_index[i]
            return _leaf_hash(indexed_leaf(c.key, nexts[i], c.new_size, c.new_root))

        got, _ = _tree_root(p_new, [*indexes, *range(p_old, p_new)], new_leaf, node_map)
        if got != new_root:
            raise TransitionError("the new heads root does not follow")
    updated = sum(1 for c in changed if c.new_size > c.size)
    return TransitionSummary(updated, len(inserted), tuple(logs))
