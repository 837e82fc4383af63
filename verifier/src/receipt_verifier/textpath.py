"""The one-pass path on a receipt's text: an anchored v1 receipt exactly as the reference service writes it.

The service writes compact JSON with its keys in one order. ``TextPath.parse_and_walk`` matches that
layout with one regular expression and reads each value straight from the text. Every value class
excludes ``"`` and ``\\`` (the hashes once ``walk_and_build`` has checked them as lowercase hex), so the
text decodes, as JSON, to exactly the document ``fastpath.parse_and_walk`` takes: the same keys, once
each, holding the same values. The anchors list is read once per distinct text (kept up to 8 MiB of
text), since every receipt of a tree carries the same one: a single local anchor with a v1 entry by a
second pattern, which also gives the entry's canonical bytes (its values in sorted-key order), so a
receipt of a tree not seen before costs no JSON work at all; any other list is decoded (refusing
repeated keys). A tree's first receipt hashes its whole path; the path memo serves the receipts after
it. Anything else (other whitespace, key order, escapes, a bound crossed) returns None and the caller
decodes the text. Differential tests hold this path to the others.
"""

from __future__ import annotations

import re
from typing import Any

from .codec import MAX_SAFE_INT, MAX_TREE_SIZE, Limits, parse_anchor
from .errors import MalformedReceiptError
from .fastpath import SEG, SIBLING_TAIL, SIDE_AT, PathMemo, frozen_from, make_frozen, walk_and_build
from .merkle import path_sides
from .model import (
    BRANCH_LABEL,
    CONTEXT_V1,
    RECEIPT_TYPE,
    Anchor,
    FabricAnchor,
    LedgerEntry,
    LocalAnchor,
    Receipt,
    TreeInfo,
)
from .strict_json import loads_anchors

# Any 64 characters where the service writes a hash: ``walk_and_build`` checks that each is lowercase hex
# before anything is accepted (once that holds, the match is the one with hex classes here). Letting the
# engine skip them is most of this pattern's speed.
_HEX64 = ".{64}"
_INT = "(0|[1-9][0-9]{0,9})"
_WS = "[ \t\n\r]*"
_RECEIPT = re.compile(
    _WS
    + re.escape(f'{{"@context":"{CONTEXT_V1}","type":"{RECEIPT_TYPE}","hash":"')
    + f"({_HEX64})"
    + re.escape('","proof_id":"')
    + "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    + re.escape('","hash_received":"')
    + r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{7}Z)"
    + re.escape('","state":"anchored","tree":{"window_id":"')
    + "([A-Za-z0-9._:-]{1,64})"
    + re.escape('","tree_index":')
    + _INT
    + re.escape(',"leaf_index":')
    + _INT
    + re.escape(',"tree_size":')
    + _INT
    + re.escape(f'}},"branches":[{{"label":"{BRANCH_LABEL}","ops":[{{"l":"')
    + f"({_HEX64})"
    + re.escape('"},{"op":"sha-256"},{"l":"00"},{"op":"sha-256"},')
    + "((?:"
    + re.escape('{"')
    + "[lr]"
    + re.escape('":"')
    + _HEX64
    + re.escape(SIBLING_TAIL)
    + ")*+)"  # possessive: a level given back could never match {"anchors": (a level starts {"l or {"r)
    + re.escape('{"anchors":')
    + r"(\[.*\])"
    + re.escape("}]}]}")
    + _WS,
    re.DOTALL,
)
_H64 = "([0-9a-f]{64})"
_ID = "([A-Za-z0-9._:-]{1,64})"
_NUM = "(0|[1-9][0-9]{0,15})"
_TIME = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z)"
# A list of one local anchor with a v1 ledger entry (what v1 receipts carry), in the service's key order.
# Each value class is the one ``codec.parse_entry`` checks, restricted to ASCII without ``"`` or ``\\``.
_LOCAL_ONE = re.compile(
    re.escape('[{"type":"local","anchor_id":"')
    + _ID
    + re.escape('","key_id":"')
    + "([0-9a-f]{16})"
    + re.escape('","entry":{"v":1,"seq":')
    + _NUM
    + re.escape(',"prev":"')
    + _H64
    + re.escape('","window_id":"')
    + _ID
    + re.escape('","tree_index":')
    + _NUM
    + re.escape(',"tree_size":')
    + _NUM
    + re.escape(',"root":"')
    + _H64
    + re.escape('","window_start":"')
    + _TIME
    + re.escape('","window_end":"')
    + _TIME
    + re.escape('","time":"')
    + _TIME
    + re.escape('"},"signature":"')
    + "([0-9a-f]{128})"
    + re.escape('"}]')
)
_ANCHORS_CHARS = 8 << 20  # characters of anchors lists kept (about 3,000 of a local and three Fabric
# anchors); the cache starts over when it would pass this


class TextPath:
    """Parses and walks receipts from their text, sharing work between receipts of one tree."""

    def __init__(self, limits: Limits, memo: PathMemo | None) -> None:
        self._limits = limits
        self._memo = memo
        self._anchors: dict[str, tuple[Anchor, ...]] = {}
        self._anchors_chars = 0

    def parse_and_walk(self, text: str | bytes) -> tuple[Receipt, bytes, tuple[Anchor, ...]] | None:
        """(receipt, root, anchors) for an anchored v1 receipt in the service's layout, else None."""
        limits = self._limits
        if len(text) > limits.max_bytes or limits.max_branches < 1 or limits.max_depth < 1:
            return None
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                return None
        m = _RECEIPT.fullmatch(text)
        if m is None:
            return None
        h, proof_id, received, window_id, tree_index, index, size, salt, path, listed = m.groups()
        tree_index_i, index_i, size_i = int(tree_index), int(index), int(size)
        if tree_index_i >= 2**31 or not index_i < size_i <= MAX_TREE_SIZE:
            return None
        if salt[32:] != proof_id.replace("-", ""):
            return None
        sides = path_sides(index_i, size_i)
        k = len(sides)
        if len(path) != k * SEG or 5 + 3 * k > limits.max_ops or path[SIDE_AT::SEG] != sides:
            return None
        memo = self._memo
        anchors = self._anchors.get(listed)
        if anchors is None:  # the first receipt of its tree (as far as the cache knows): no path to share yet
            anchors, memo = self._parse_anchors(listed), None
            if anchors is None:
                return None
        tree = make_frozen(TreeInfo, window_id=window_id, tree_index=tree_index_i, leaf_index=index_i, tree_size=size_i)
        return walk_and_build(h, proof_id, received, tree, salt, path, anchors, memo)

    def _parse_anchors(self, listed: str) -> tuple[Anchor, ...] | None:
        """The anchors list decoded and parsed as ``fastpath`` does; kept when made of known anchor types."""
        local = local_anchor(listed) if self._limits.max_anchors >= 1 else None
        if local is not None:
            self._keep(listed, (local,))
            return (local,)
        try:
            doc: Any = loads_anchors(listed)
            if type(doc) is not list or not 1 <= len(doc) <= self._limits.max_anchors:
                return None
            anchors = tuple([parse_anchor(a, remember=False) for a in doc])
        except (ValueError, RecursionError, MalformedReceiptError):
            return None
        if len({(a.type, a.anchor_id) for a in anchors}) != len(anchors):
            return None
        if all(type(a) in (LocalAnchor, FabricAnchor) for a in anchors):  # immutable: safe to share
            self._keep(listed, anchors)
        return anchors

    def _keep(self, listed: str, anchors: tuple[Anchor, ...]) -> None:
        if self._anchors_chars + len(listed) > _ANCHORS_CHARS:
            self._anchors.clear()
            self._anchors_chars = 0
        self._anchors[listed] = anchors
        self._anchors_chars += len(listed)


def local_anchor(listed: str) -> LocalAnchor | None:
    """The anchor of a list of one local anchor with a v1 entry in the service's layout, as
    ``codec.parse_anchor`` parses it, its entry's canonical bytes made from the same text; else None.

    Every value is a string of a class without ``"``, ``\\`` or non-ASCII characters, or a number in
    its plain form, so the entry's canonical JSON is its values in sorted-key order, as written here."""
    m = _LOCAL_ONE.fullmatch(listed)
    if m is None:
        return None
    anchor_id, key_id, seq, prev, window_id, tree_index, tree_size, root, start, end, time, signature = m.groups()
    seq_i, tree_index_i, tree_size_i = int(seq), int(tree_index), int(tree_size)
    if seq_i > MAX_SAFE_INT or tree_index_i >= 2**31 or not 1 <= tree_size_i <= MAX_TREE_SIZE:
        return None
    entry = frozen_from(  # the fields in a dict of their own (a quarter of this function's time as keywords)
        LedgerEntry,
        {
            "seq": seq_i,
            "prev": prev,
            "window_id": window_id,
            "tree_index": tree_index_i,
            "tree_size": tree_size_i,
            "root": root,
            "window_start": start,
            "window_end": end,
            "time": time,
            "domain": None,
            "heads_root": None,
            "heads_size": None,
            "chain_seq": None,
            "proof_hash": None,
            "_canonical": (
                f'{{"prev":"{prev}","root":"{root}","seq":{seq},"time":"{time}","tree_index":{tree_index},'
                f'"tree_size":{tree_size},"v":1,"window_end":"{end}","window_id":"{window_id}",'
                f'"window_start":"{start}"}}'
            ).encode("ascii"),
        },
    )
    return frozen_from(
        LocalAnchor, {"anchor_id": anchor_id, "key_id": key_id, "entry": entry, "signature": signature, "type": "local"}
    )
