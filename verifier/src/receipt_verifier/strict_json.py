"""JSON decoding that refuses duplicate object keys.

``{"hash": "<fake>", "hash": "<real>"}`` decodes in Python to the last value while other readers (people,
tools) take the first; a receipt, bundle, ledger line or request with a repeated key is refused instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_DICTS = {dict}
_WS_COLON = re.compile(r'"[ \t\n\r]+:')
_WS_COLON_B = re.compile(rb'"[ \t\n\r]+:')


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r:.60} in one object")
            seen.add(key)
    return obj


def loads(data: bytes | str) -> Any:
    """Like ``json.loads``; a repeated key in any object raises ``ValueError`` naming it, and so does
    nesting deeper than the parser recurses (``RecursionError`` otherwise)."""
    try:
        return json.loads(data, object_pairs_hook=_pairs)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads_receipt(data: bytes | str) -> Any:
    """``loads`` for receipts, cheaply: decode with the C parser, then prove there is no repeated key by
    counting (see ``_receipt_keys``); only when the counts differ is the text parsed again, strictly."""
    return _counted(data, _receipt_keys)


def loads_anchors(data: str) -> Any:
    """``loads`` for a receipt's anchors list, by the same counting (``_anchors_keys``)."""
    return _counted(data, _anchors_keys)


def _counted(data: bytes | str, keys: Callable[[Any], int]) -> Any:
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if isinstance(data, bytes):
        colons, spaced = data.count(b'":'), _WS_COLON_B.search(data) is not None
    else:
        colons, spaced = data.count('":'), _WS_COLON.search(data) is not None
    if not spaced and colons == keys(doc):
        return doc
    return loads(data)


def _anchors_keys(doc: Any) -> int:
    """Keys in an anchors list (each anchor and its ledger entry): never above the decoded count."""
    if type(doc) is not list or set(map(type, doc)) != _DICTS:
        return -1
    n = sum(map(len, doc))
    for a in doc:
        entry = a.get("entry")
        if type(entry) is dict:
            n += len(entry)
    return n


def _receipt_keys(doc: Any) -> int:
    """Keys in the receipt-shaped parts of ``doc`` (top level, tree, branches, ops, anchors, ledger entries).

    Every key in the text is a quote directly followed by a colon (``spaced`` rules out whitespace
    between them), and so is any string holding ``\\":``. So the text's count of ``":`` is at least
    the number of keys written, and that is above the decoded count if a key was repeated; this count
    never exceeds the decoded count. Equal counts therefore prove that no key was repeated."""
    if type(doc) is not dict:
        return -1
    n = len(doc)
    tree = doc.get("tree")
    if type(tree) is dict:
        n += len(tree)
    branches = doc.get("branches")
    if type(branches) is not list:
        return n
    for b in branches:
        if type(b) is not dict:
            continue
        n += len(b)
        ops = b.get("ops")
        if type(ops) is not list or not ops or set(map(type, ops)) != _DICTS:
            continue  # counted short: the caller then parses strictly
        n += sum(map(len, ops))
        anchors = ops[-1].get("anchors")  # v1: anchors only in the last op
        if type(anchors) is list and set(map(type, anchors)) == _DICTS:
            n += sum(map(len, anchors))
            for a in anchors:
                entry = a.get("entry")
                if type(entry) is dict:
                    n += len(entry)
    return n
