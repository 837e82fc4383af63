"""History bundles (spec section 14): a subject's whole log in a domain, its head proof and the anchor.

The log is read back from the lane's store as of the newest window anchored at or before ``as_of``;
the heads of every subject log of that window are rebuilt from the stored heads and checked against
the root the window committed to before the bundle is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from receipt_verifier.codec import parse_anchor
from receipt_verifier.errors import FabricEvidenceError
from receipt_verifier.evidence import block_list
from receipt_verifier.heads import IndexedHeads
from receipt_verifier.history import HISTORY_CONTEXT, HISTORY_TYPE, pack
from receipt_verifier.logs import EMPTY_ROOT, log_root, record_leaf
from receipt_verifier.model import FabricAnchor
from receipt_verifier.sorted_heads import HeadsTree

from .chain import indexed_heads
from .errors import AnchorBackendError, CorruptRecordError, NotFoundError, UnprocessableError
from .fabric.evidence import BlockCache
from .lanes import Lane

log = logging.getLogger("receipt_service.history")

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # the form window times are stored in (compared as text)


def parse_as_of(text: str | None) -> str:
    """``as_of`` (RFC 3339, default now) in the stored form."""
    if text is None:
        return datetime.now(UTC).strftime(STAMP)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise UnprocessableError(f"as_of={text[:40]!r} must be an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z")
    return moment.astimezone(UTC).strftime(STAMP)


def _heads_of(
    heads: dict[str, tuple[int, bytes]], root: bytes | None, size: int | None
) -> IndexedHeads | HeadsTree | None:
    """The window's heads tree: indexed (spec section 14.5) or, for windows closed before it, sorted."""
    indexed = indexed_heads(heads)
    if (indexed.root, indexed.size) == (root, size):
        return indexed
    sorted_tree = HeadsTree(heads)
    if (sorted_tree.root, sorted_tree.size) == (root, size):
        return sorted_tree
    return None


async def _successors(evidence: BlockCache, anchors: list[FabricAnchor]) -> list[tuple[str, int]]:
    """(channel, block) of each chained anchor's successor found on its channel (spec §14.9): the blocks
    that prove the window committed. A peer that cannot tell now leaves them out (logged)."""
    out = []
    for a in anchors:
        try:
            number = await evidence.successor(a)
        except (AnchorBackendError, NotFoundError, FabricEvidenceError) as exc:
            log.warning("the successor of %s was not found (the bundle goes without it): %s", a.anchor_id, exc)
            continue
        if number is not None:
            out.append((a.channel, number))
    return out


async def history_bundle(lane: Lane, subject: str, as_of: str, evidence: BlockCache | None = None) -> dict[str, Any]:
    """The bundle for ``subject`` in the lane's domain as of the newest anchored window up to ``as_of``:
    one tree of that window with every anchor it has, and the Fabric blocks that prove those."""
    domain = lane.domain
    assert domain is not None
    store = lane.store
    for tree in await store.anchored_windows(as_of):
        done = [json.loads(j.anchor_json) for j in await store.anchors_for(tree) if j.anchor_json is not None]
        if done:
            break
    else:
        raise NotFoundError(f"no window of {domain} is anchored at or before {as_of} yet; retry after the next window")
    anchors = [parse_anchor(a) for a in done]
    fabric = [a for a in anchors if isinstance(a, FabricAnchor)]
    blocks = []
    if evidence is not None and fabric:
        blocks = await evidence.evidence(fabric, await _successors(evidence, fabric))
    all_heads = await store.subject_heads(tree.last_seq)
    heads = await asyncio.to_thread(_heads_of, all_heads, tree.heads_root, tree.heads_size)  # linear in subjects
    if heads is None:
        raise CorruptRecordError(f"window {tree.window_id}: the stored subject heads do not give its committed root")
    size, root = all_heads.get(subject, (0, EMPTY_ROOT))
    rows = await store.subject_records(subject, -1, size) if size else []
    leaves = [record_leaf(r.nonce, r.proof_id, r.hash, domain, subject, r.log_pos) for r in rows]
    if len(rows) != size or await asyncio.to_thread(log_root, leaves) != root:
        raise CorruptRecordError(f"the log of {subject} in {domain} does not give its stored head")
    return {
        "@context": HISTORY_CONTEXT,
        "type": HISTORY_TYPE,
        "subject": subject,
        "domain": domain,
        "as_of": as_of,
        "log": {
            "size": size,
            "root": root.hex(),
            "hashes": pack([r.hash for r in rows]),
            "proof_ids": pack([r.proof_id for r in rows]),
            "nonces": pack([r.nonce for r in rows]),
            "leaves": pack(leaves),
        },
        "head_proof": heads.prove(subject),
        "window": {
            "window_id": tree.window_id,
            "tree_index": tree.tree_index,
            "tree_size": tree.size,
            "root": tree.root.hex(),
            "window_end": tree.window_end,
            "heads_root": heads.root.hex(),
            "heads_size": heads.size,
            "anchors": done,
        },
    } | ({"fabric_blocks": block_list(blocks)} if blocks else {})
