"""Evidence bundles: a receipt with the Fabric blocks that prove its anchors, in one self-contained file.

``{"@context": EVIDENCE_CONTEXT, "type": "HealthReceiptEvidence", "receipt": <v1 receipt>,
"fabric_blocks": [{"channel", "number", "block": <base64 of the common.Block bytes>}]}``
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from . import strict_json
from .errors import LimitExceededError, MalformedReceiptError

EVIDENCE_CONTEXT = "https://w3id.org/health-receipt/evidence/v1"
EVIDENCE_TYPE = "HealthReceiptEvidence"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_BLOCKS = 64

Blocks = dict[tuple[str, int], bytes]


def is_bundle(doc: object) -> bool:
    """Whether a decoded JSON document is an evidence bundle (rather than a bare receipt)."""
    return isinstance(doc, dict) and doc.get("@context") == EVIDENCE_CONTEXT


def make_bundle(receipt: Mapping[str, Any], blocks: Iterable[tuple[str, int, bytes]]) -> dict[str, Any]:
    """A bundle of a receipt (as a JSON object) and blocks (channel, number, bytes)."""
    return {
        "@context": EVIDENCE_CONTEXT,
        "type": EVIDENCE_TYPE,
        "receipt": dict(receipt),
        "fabric_blocks": block_list(sorted(blocks, key=lambda b: (b[0], b[1]))),
    }


def load_document(data: bytes | str) -> Any:
    """Decode JSON text of a receipt or a bundle (a bundle may be far larger than a receipt)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise LimitExceededError(f"the document has {len(data)} bytes; at most {MAX_BUNDLE_BYTES} are accepted")
    try:
        return strict_json.loads(data)
    except ValueError as exc:
        raise MalformedReceiptError(f"not JSON: {exc}") from None


def split_bundle(doc: Mapping[str, Any]) -> tuple[Any, Blocks]:
    """(the receipt object, blocks keyed by (channel, number)) of a bundle; raises on anything off-format."""
    extra = set(doc) - {"@context", "type", "receipt", "fabric_blocks"}
    if doc.get("type") != EVIDENCE_TYPE or extra or "receipt" not in doc:
        raise MalformedReceiptError(
            f"an evidence bundle has @context, type {EVIDENCE_TYPE}, receipt and fabric_blocks"
            + (f"; unexpected: {', '.join(sorted(extra))}" if extra else "")
        )
    return doc["receipt"], parse_blocks(doc.get("fabric_blocks", []))


def block_list(blocks: Iterable[tuple[str, int, bytes]]) -> list[dict[str, Any]]:
    """The ``fabric_blocks`` member: each block base64-encoded with its channel and number."""
    return [{"channel": c, "number": n, "block": base64.b64encode(b).decode("ascii")} for c, n, b in blocks]


def parse_blocks(items: Any) -> Blocks:
    """A ``fabric_blocks`` member (of an evidence or a history bundle), keyed by (channel, number)."""
    if not isinstance(items, list) or len(items) > MAX_BLOCKS:
        raise MalformedReceiptError(f"fabric_blocks must be a list of at most {MAX_BLOCKS} blocks")
    blocks: Blocks = {}
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and set(item) == {"channel", "number", "block"}
        ok = ok and isinstance(item["channel"], str) and isinstance(item["number"], int) and item["number"] >= 0
        if not ok or not isinstance(item["block"], str):
            raise MalformedReceiptError(f"fabric_blocks[{i}] must be {{channel, number, block (base64)}}")
        try:
            data = base64.b64decode(item["block"], validate=True)
        except (binascii.Error, ValueError):
            raise MalformedReceiptError(f"fabric_blocks[{i}].block is not base64") from None
        key = (item["channel"], item["number"])
        if key in blocks:
            raise MalformedReceiptError(f"fabric_blocks lists block {key[1]} of {key[0]} twice")
        blocks[key] = data
    return blocks
