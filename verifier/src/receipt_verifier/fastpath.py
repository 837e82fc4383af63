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
from .merkle import climb_hex, sibling_kinds
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
# A path's siblings in the service's text layout, one segment per level: {"<side>":"<hex>"},{"l":"01"},{"op":"sha-256"},
SIBLING_TAIL = '"},{"l":"01"},{"op":"sha-256"},'
SEG = 6 + 64 + len(SIBLING_TAIL)
SIDE_AT, VALUE_AT = 2, 6
T = TypeVar("T")


def make_frozen(cls: type[T], **fields: Any) -> T:
    """A frozen model object with every field given, without the per-field frozen ``__setattr__``
    of the generated ``__init__`` (half the cost; these models have no ``__post_init__``)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def frozen_from(cls: type[T], fields: dict[str, Any]) -> T:
    """``make_frozen`` with the fields already in a dict, which becomes the object's own (pass a new one)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    return obj


class PathMemo:
    """Work shared between receipts of one tree: their paths meet below the root.

    Maps a node a path passed through to (its step on that path, the path's siblings in text layout,
    the root they gave, the path's ops above the leaf: three a level). A later path that reaches the same node
    with the same siblings above it has the same root and the same ops above it, so neither is made
    again: a receipt whose neighbour was checked before hashes about two levels. At most ``size``
    nodes, cleared when full; an entry holds only a path (at most 32 levels of 101 characters) and
    its ops, never a receipt's anchors, so the memo stays within a few tens of MiB whatever it is fed.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.nodes: dict[bytes, tuple[int, str, bytes, tuple[Op, ...]]] = {}
        self.hits = 0

    def put(self, values: list[bytes], path: str, root: bytes, ops: tuple[Op, ...]) -> None:
        """Remember the nodes a path passed through (``values[j]`` at step ``j + 1``), its root and its
        ops from the leaf up to the root (no anchors op)."""
        nodes = self.nodes
        if len(nodes) + len(values) > self.size:
            nodes.clear()
            if len(values) > self.size:
                return
        for j, v in enumerate(values, 1):
            nodes[v] = (j, path, root, ops)


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
    tree = make_frozen(TreeInfo, window_id=window_id, tree_index=tree_index, leaf_index=index, tree_size=size)
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
    # one pattern for the record hash, the salt and every sibling (each of checked length)
    if _HEX_RE.fullmatch(h + salt + "".join(values)) is None or anchors_op.keys() != {"anchors"}:
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

    path = "".join([f'{{"{side}":"{v}{SIBLING_TAIL}' for side, v in zip(kinds, values, strict=True)])
    return walk_and_build(h, proof_id, received, tree, salt, path, anchors, memo)


def walk_and_build(
    h: str,
    proof_id: str,
    received: str,
    tree: TreeInfo,
    salt: str,
    path: str,
    anchors: tuple[Anchor, ...],
    memo: PathMemo | None,
) -> tuple[Receipt, bytes, tuple[Anchor, ...]] | None:
    """Hash a v1 path to its root and build the receipt: the shared tail of the one-pass paths; None when
    ``h``, ``salt`` or a sibling is not lowercase hex of its length.

    ``path`` is the siblings in text layout (``SEG`` characters a level) with the sides ``sibling_kinds``
    gives. Each sibling hashed is checked here; a level taken from the memo is text equal to a path
    whose every level was checked when it was walked."""
    sha = hashlib.sha256
    try:
        record, salt_bytes = bytes.fromhex(h), bytes.fromhex(salt)
    except ValueError:
        return None
    if len(record) != 32 or len(salt_bytes) != 32 or record.hex() != h or salt_bytes.hex() != salt:
        return None
    value = sha(b"\x00" + sha(salt_bytes + record).digest()).digest()
    if memo is None:  # every level hashed: the siblings checked and decoded at once
        sides, hexes = path[SIDE_AT::SEG], [path[at : at + 64] for at in range(VALUE_AT, len(path), SEG)]
        root = climb_hex(value, sides, hexes)
        if root is None:
            return None
        k = len(hexes)
        each: list[Op] = [_NODE, _NODE, _SHA] * k
        each[::3] = map(_new, repeat(Op, k), zip(sides, hexes, repeat((), k), strict=True))  # (side, sibling, ())
        return _built(h, proof_id, received, tree, salt, tuple(each), anchors, root)
    seen = memo.nodes.get
    passed: list[bytes] = []
    lower: list[Op] = []
    upper: tuple[Op, ...] = ()
    for at in range(0, len(path), SEG):
        if at:
            hit = seen(value)
            # the same node with the same siblings above: the same root, the same ops above
            if hit is not None and hit[1][SEG * hit[0] :] == path[at:]:
                memo.hits += 1
                value, upper = hit[2], hit[3][3 * hit[0] :]
                break
            passed.append(value)
        side, hex_value = path[at + SIDE_AT], path[at + VALUE_AT : at + VALUE_AT + 64]
        try:
            node = bytes.fromhex(hex_value)
        except ValueError:
            return None
        if node.hex() != hex_value:  # upper case, whitespace, a short value
            return None
        value = sha(b"\x01" + node + value if side == "l" else b"\x01" + value + node).digest()
        lower += (_new(Op, (side, hex_value, ())), _NODE, _SHA)
    levels = (*lower, *upper)
    if passed:
        memo.put(passed, path, value, levels)
    return _built(h, proof_id, received, tree, salt, levels, anchors, value)


def _built(
    h: str,
    proof_id: str,
    received: str,
    tree: TreeInfo,
    salt: str,
    levels: tuple[Op, ...],
    anchors: tuple[Anchor, ...],
    root: bytes,
) -> tuple[Receipt, bytes, tuple[Anchor, ...]]:
    """The anchored receipt with these path ops above its salted leaf, its root and anchors."""
    ops = (_new(Op, ("l", salt, ())), _SHA, _LEAF, _SHA, *levels, _new(Op, ("anchors", "", anchors)))
    receipt = make_frozen(
        Receipt,
        hash=h,
        proof_id=proof_id,
        hash_received=received,
        state="anchored",
        branches=(make_frozen(Branch, ops=ops, label=BRANCH_LABEL, branches=()),),
        tree=tree,
        pending_anchors=(),
    )
    return receipt, root, anchors
