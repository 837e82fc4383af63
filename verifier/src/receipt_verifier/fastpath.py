"""One pass over an anchored v1 receipt as the reference service writes it: parse and walk the branch together.

``parse_and_walk`` accepts only documents that ``codec.parse_receipt`` followed by
``verify.recompute_root`` would accept, and returns the same receipt, root and anchors. For
anything else (another state, a shape it does not expect, any error) it returns None and the
caller takes the general path, which names the problem. A differential test holds the two
paths to this.
"""

from __future__ import annotations

import hashlib
import re
from functools import partial
from itertools import repeat
from typing import Any, TypeVar

from .codec import (
    _ID_RE,
    _RECEIVED_RE,
    _TREE_KEYS,
    _UUID_RE,
    MAX_TREE_SIZE,
    Limits,
    parse_anchor,
)
from .errors import MalformedReceiptError
from .merkle import sibling_kinds
from .model import BRANCH_LABEL, CONTEXT_V1, RECEIPT_TYPE, Anchor, Branch, Op, Receipt, TreeInfo

_KEYS = frozenset({"@context", "type", "hash", "proof_id", "hash_received", "state", "tree", "branches"})
_SHA_DICT = {"op": "sha-256"}
_NODE_DICT = {"l": "01"}
_LEAF_HEAD = [{"op": "sha-256"}, {"l": "00"}, {"op": "sha-256"}]
_SHA = Op("op", "sha-256")
_NODE = Op("l", "01")
_LEAF = Op("l", "00")
_HEX_RE = re.compile(r"[0-9a-f]*")
_new = tuple.__new__
_MAKE_OP = partial(tuple.__new__, Op)
T = TypeVar("T")


def _build(cls: type[T], **fields: Any) -> T:
    """A frozen model object with every field given, without the per-field frozen ``__setattr__``
    of the generated ``__init__`` (half the cost; these models have no ``__post_init__``)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


class PathMemo:
    """Work shared between receipts of one tree: the paths of neighbouring leaves meet below the root.

    Maps (node value at the middle level, its position, the tree size, every sibling above it) to the
    root they give: a receipt whose path reaches the same node with the same siblings above has the
    same root, so the upper half of its path is not hashed again. Bounded; cleared when full.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._roots: dict[tuple[bytes, int, int, str], bytes] = {}
        self.hits = 0

    def get(self, key: tuple[bytes, int, int, str]) -> bytes | None:
        """The root for this half-way point, if seen."""
        root = self._roots.get(key)
        if root is not None:
            self.hits += 1
        return root

    def put(self, key: tuple[bytes, int, int, str], root: bytes) -> None:
        """Remember a half-way point's root (a size-0 memo remembers nothing)."""
        if len(self._roots) >= self._size:
            self._roots.clear()
            if not self._size:
                return
        self._roots[key] = root


def parse_and_walk(
    doc: Any, limits: Limits, memo: PathMemo | None = None
) -> tuple[Receipt, bytes, tuple[Anchor, ...]] | None:
    """(receipt, root, anchors) for a plain anchored v1 receipt, else None."""
    if type(doc) is not dict or doc.keys() != _KEYS:
        return None
    if doc["@context"] != CONTEXT_V1 or doc["type"] != RECEIPT_TYPE or doc["state"] != "anchored":
        return None
    h, proof_id, received = doc["hash"], doc["proof_id"], doc["hash_received"]
    if (
        type(h) is not str
        or type(proof_id) is not str
        or type(received) is not str
        or len(h) != 64
        or _UUID_RE.fullmatch(proof_id) is None
        or _RECEIVED_RE.fullmatch(received) is None
    ):
        return None
    branches = doc["branches"]
    if type(branches) is not list or len(branches) != 1 or limits.max_branches < 1 or limits.max_depth < 1:
        return None
    branch = branches[0]
    if type(branch) is not dict or branch.keys() != {"label", "ops"} or branch["label"] != BRANCH_LABEL:
        return None
    raw = branch["ops"]
    t = doc["tree"]
    if type(t) is not dict or t.keys() != _TREE_KEYS:
        return None
    window_id, tree_index, index, size = t["window_id"], t["tree_index"], t["leaf_index"], t["tree_size"]
    if (
        type(window_id) is not str
        or _ID_RE.fullmatch(window_id) is None
        or type(tree_index) is not int
        or type(index) is not int
        or type(size) is not int
        or not 0 <= tree_index < 2**31
        or not 0 <= index < size <= MAX_TREE_SIZE
    ):
        return None
    tree = _build(TreeInfo, window_id=window_id, tree_index=tree_index, leaf_index=index, tree_size=size)
    kinds = sibling_kinds(index, size)
    k = len(kinds)
    end = 4 + 3 * k
    if type(raw) is not list or len(raw) != end + 1 or end + 1 > limits.max_ops:
        return None
    if raw[1:4] != _LEAF_HEAD or raw[5:end:3] != [_NODE_DICT] * k or raw[6:end:3] != [_SHA_DICT] * k:
        return None
    salt_op, anchors_op = raw[0], raw[end]
    if type(salt_op) is not dict or salt_op.keys() != {"l"} or type(anchors_op) is not dict:
        return None
    salt = salt_op["l"]
    if type(salt) is not str or len(salt) != 64 or salt[32:] != proof_id.replace("-", ""):
        return None
    # The siblings, checked with map() passes rather than a Python loop per op.
    sibs = raw[4:end:3]
    if k and (set(map(type, sibs)) != {dict} or set(map(len, sibs)) != {1}):
        return None
    values: list[Any] = list(map(dict.get, sibs, kinds))  # None where the op holds the other side
    if k and (set(map(type, values)) != {str} or set(map(len, values)) != {64}):
        return None
    joined = "".join(values)
    # one pattern for the record hash, the salt and every sibling (each of checked length)
    if _HEX_RE.fullmatch(h + salt + joined) is None or anchors_op.keys() != {"anchors"}:
        return None
    listed = anchors_op["anchors"]
    if type(listed) is not list or not 1 <= len(listed) <= limits.max_anchors:
        return None
    try:
        anchors = tuple([parse_anchor(a) for a in listed])  # on error the general path names the place
    except MalformedReceiptError:
        return None
    if len({(a.type, a.anchor_id) for a in anchors}) != len(anchors):  # a repeated anchor: the general path names it
        return None

    sha = hashlib.sha256
    value = sha(b"\x00" + sha(bytes.fromhex(salt) + bytes.fromhex(h)).digest()).digest()
    nodes = bytes.fromhex(joined)
    mid = k // 2 if memo is not None and k >= 4 else k
    for j in range(mid):
        node = nodes[32 * j : 32 * j + 32]
        value = sha(b"\x01" + node + value if kinds[j] == "l" else b"\x01" + value + node).digest()
    if mid < k:
        assert memo is not None
        key = (value, index >> mid, size, joined[64 * mid :])
        shared = memo.get(key)
        if shared is None:
            for j in range(mid, k):
                node = nodes[32 * j : 32 * j + 32]
                value = sha(b"\x01" + node + value if kinds[j] == "l" else b"\x01" + value + node).digest()
            memo.put(key, value)
        else:
            value = shared
    ops: list[Op] = [_SHA] * (end + 1)
    ops[0] = _new(Op, ("l", salt, ()))
    ops[2] = _LEAF
    ops[4:end:3] = map(_MAKE_OP, zip(kinds, values, repeat(())))
    ops[5:end:3] = [_NODE] * k
    ops[end] = _new(Op, ("anchors", "", anchors))
    receipt = _build(
        Receipt,
        hash=h,
        proof_id=proof_id,
        hash_received=received,
        state="anchored",
        branches=(_build(Branch, ops=tuple(ops), label=BRANCH_LABEL, branches=()),),
        tree=tree,
        pending_anchors=(),
    )
    return receipt, value, anchors
