"""JSON decoding that refuses duplicate object keys.

``{"hash": "<fake>", "hash": "<real>"}`` decodes in Python to the last value while other readers (people,
tools) take the first; a receipt, bundle, ledger line or request with a repeated key is refused instead.
"""

from __future__ import annotations

import json
from typing import Any


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
    """Like ``json.loads``; a repeated key in any object raises ``ValueError`` naming it."""
    return json.loads(data, object_pairs_hook=_pairs)
