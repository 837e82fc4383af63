"""Chainpoint op semantics, exactly as chainpoint-parse 5.0.1 computes them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .hashing import op_value_bytes
from .model import Anchor, Branch


def evaluate(start: bytes, branches: Sequence[Branch]) -> list[tuple[Anchor, bytes]]:
    """Every anchor with the value the ops say is stored there.

    ``l`` prepends, ``r`` appends, ``op`` hashes; child branches start from their
    parent's final value.
    """
    found: list[tuple[Anchor, bytes]] = []

    def walk(branch: Branch, value: bytes) -> None:
        for op in branch.ops:
            if op.kind == "l":
                value = op_value_bytes(op.value) + value
            elif op.kind == "r":
                value = value + op_value_bytes(op.value)
            elif op.kind == "op":
                value = hashlib.sha256(value).digest()
            else:
                found.extend((a, value) for a in op.anchors)
        for child in branch.branches:
            walk(child, value)

    for b in branches:
        walk(b, start)
    return found
