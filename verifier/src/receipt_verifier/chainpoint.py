"""Re-express a v1 receipt as a Chainpoint v4 proof (schema 2.1.1, chainpoint-parse 5.0.1).

Mapping: the ops are copied unchanged (they already use only ``l``, ``r``, ``sha-256``);
every anchor becomes a ``cal`` anchor (Chainpoint's type for a calendar the proof's
issuer keeps) whose ``anchor_id`` names our anchor: ``local:<key_id>:<seq>`` or
``fabric:<channel>:<tx_id>``. Fabric block numbers, keys and ledger entries have no place
in the Chainpoint schema and stay in the v1 receipt. Unknown anchor types are dropped.
``hash_received`` is truncated to whole seconds, as the Chainpoint schema requires.
"""

from __future__ import annotations

from typing import Any

from .errors import UsageError
from .model import Anchor, FabricAnchor, LocalAnchor, Receipt

CHAINPOINT_V4_CONTEXT = "https://w3id.org/chainpoint/v4"


def chainpoint_anchor_id(anchor: Anchor) -> str | None:
    """The Chainpoint ``anchor_id`` for one of our anchors (None: not exportable)."""
    if isinstance(anchor, LocalAnchor):
        return f"local:{anchor.anchor_id}"
    if isinstance(anchor, FabricAnchor):
        return f"fabric:{anchor.channel}:{anchor.tx_id}"
    return None


def to_chainpoint_v4(receipt: Receipt) -> dict[str, Any]:
    """The Chainpoint v4 proof for an anchored (or partly anchored) receipt."""
    if not receipt.branches:
        raise UsageError(f"receipt {receipt.proof_id} is pending: it has no branch to export yet")
    branches = []
    for branch in receipt.branches:
        ops: list[dict[str, Any]] = []
        for op in branch.ops:
            if op.kind == "anchors":
                cal = [{"type": "cal", "anchor_id": i} for a in op.anchors if (i := chainpoint_anchor_id(a))]
                if cal:
                    ops.append({"anchors": cal})
            else:
                ops.append({op.kind: op.value})
        if not any("anchors" in op for op in ops):
            raise UsageError(f"receipt {receipt.proof_id} has no exportable anchor yet")
        out: dict[str, Any] = {"ops": ops}
        if branch.label is not None:
            out = {"label": branch.label, "ops": ops}
        branches.append(out)
    return {
        "@context": CHAINPOINT_V4_CONTEXT,
        "type": "Chainpoint",
        "hash": receipt.hash,
        "proof_id": receipt.proof_id,
        "hash_received": receipt.hash_received[:19] + "Z",
        "branches": branches,
    }
