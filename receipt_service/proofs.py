"""Reading receipts back: stored rows -> checked tree and anchors -> a v1 receipt in its current state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from receipt_verifier import proof_id as pid
from receipt_verifier.codec import parse_anchor
from receipt_verifier.errors import MalformedReceiptError
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.model import Anchor, LocalAnchor, PendingAnchor, Receipt, TreeInfo

from .errors import CorruptRecordError, UnprocessableError
from .receipts import render
from .stores.base import SubmissionRecord, TreeRecord
from .trees import PackedTree
from .windows import Aggregator

WaitFor = Literal["aggregated", "anchored"]
RECHECK_SECONDS = 2.0  # a long poll re-reads its receipt this often even if no wake-up came (a lost message)


@dataclass(frozen=True)
class Located:
    """A submission found for its tenant, with its seq (for waiting on it)."""

    seq: int
    receipt: Receipt


def parse_ids(ids: Sequence[str]) -> list[tuple[str, int]]:
    """Proof ids -> (id, receive ticks); a malformed id is a 422 naming it."""
    out = []
    for i, raw in enumerate(ids):
        text = raw.lower()  # UUIDs are case-insensitive; receipts spell them in lowercase
        try:
            out.append((text, pid.parse_proof_id(text).ticks))
        except MalformedReceiptError:
            raise UnprocessableError(f"ids[{i}]: {raw[:80]!r} is not a proof id (a version-1 UUID)") from None
    return out


class ProofReader:
    """Builds receipts from the store, checking every record on the way."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.agg = aggregator
        self.store = aggregator.store

    async def find(self, tenant: str | None, ids: Sequence[tuple[str, int]]) -> dict[str, Located]:
        """Receipts for the ids this tenant owns (None: any tenant's); others' and unknown ids are absent."""
        keys = [(pid.parse_proof_id(text).clock_seq, ticks) for text, ticks in ids]
        rows = await self.store.get_submissions(keys)
        out: dict[str, Located] = {}
        trees: dict[tuple[str, int], tuple[TreeRecord, PackedTree, list[Anchor], list[PendingAnchor]]] = {}
        for (text, _), key in zip(ids, keys, strict=True):
            row = rows.get(key)
            if (
                row is None
                or (tenant is not None and row.tenant != tenant)
                or row.proof_id.hex() != text.replace("-", "")
            ):
                continue
            out[text] = Located(row.seq, await self._receipt(row, trees))
        return out

    async def _receipt(
        self,
        row: SubmissionRecord,
        trees: dict[tuple[str, int], tuple[TreeRecord, PackedTree, list[Anchor], list[PendingAnchor]]],
    ) -> Receipt:
        sub = row.to_submission(self.store.domain)
        # a request's ids mostly share a few trees: look in those before asking the store
        record = next((t[0] for t in trees.values() if t[0].first_seq <= row.seq <= t[0].last_seq), None)
        if record is None:
            record = await self.store.tree_for_seq(row.seq)
        if record is None:
            return render(sub, pending=self._all_pending())
        key = (record.window_id, record.tree_index)
        if key not in trees:
            tree = await self._tree(record)
            anchors, pending = await self._anchors(record)
            trees[key] = (record, tree, anchors, pending)
        record, tree, anchors, pending = trees[key]
        leaf = row.seq - record.first_seq
        if leaf_hash(sub.commitment()) != tree.leaf(leaf):
            raise CorruptRecordError(f"submission #{row.seq} does not match leaf {leaf} of its tree; it is not served")
        info = TreeInfo(record.window_id, record.tree_index, leaf, record.size)
        return render(sub, tree=info, path=tree.audit_path(leaf), anchors=anchors, pending=pending)

    async def _tree(self, record: TreeRecord) -> PackedTree:
        key = (record.window_id, record.tree_index)
        tree = self.agg.trees.get(key)
        if tree is None:
            spans = await self.store.tree_batches(record)
            (tree,) = await self.agg.builder.build([s.columns(self.store.domain) for s in spans], record.size)
            if tree.root != record.root:
                raise CorruptRecordError(f"tree {key[0]}/{key[1]}: its submissions do not give its stored root")
            self.agg.trees.put(key, tree)
        return tree

    async def _anchors(self, record: TreeRecord) -> tuple[list[Anchor], list[PendingAnchor]]:
        anchors: list[Anchor] = []
        pending: list[PendingAnchor] = []
        for job in await self.store.anchors_for(record):
            if job.anchor_json is None:
                pending.append(self._pending_for(job.target))
                continue
            try:
                anchor = parse_anchor(json.loads(job.anchor_json))
            except (ValueError, MalformedReceiptError):
                raise CorruptRecordError(
                    f"tree {record.window_id}/{record.tree_index}: the stored {job.target} anchor is damaged"
                ) from None
            _check_anchor(anchor, record)
            anchors.append(anchor)
        return anchors, pending

    def _pending_for(self, target: str) -> PendingAnchor:
        backend = self.agg.backends.get(target)
        return backend.pending() if backend is not None else PendingAnchor(target.split("-", 1)[0], target)

    def _all_pending(self) -> list[PendingAnchor]:
        return [b.pending() for b in self.agg.backends.values()]

    async def wait(self, tenant: str, text: str, ticks: int, until: WaitFor, timeout: float) -> Located | None:
        """The receipt once it reaches ``until`` (or as it stands when ``timeout`` runs out)."""
        deadline = time.monotonic() + timeout
        found = (await self.find(tenant, [(text, ticks)])).get(text)
        if found is None or _reached(found.receipt, until):
            return found
        seq = found.seq
        while (remaining := deadline - time.monotonic()) > 0:
            fut = self.agg.waiters.register(seq)
            # Read after registering, so a change between the two cannot be missed.
            found = (await self.find(tenant, [(text, ticks)])).get(text)
            if found is None or _reached(found.receipt, until):
                self.agg.waiters.discard(seq, fut)
                return found
            try:  # woken by this instance or, through the store's watch, another; re-read now and then anyway
                await asyncio.wait_for(fut, min(remaining, RECHECK_SECONDS))
            except TimeoutError:
                self.agg.waiters.discard(seq, fut)
        return found


def _reached(r: Receipt, until: WaitFor) -> bool:
    return r.state == "anchored" if until == "anchored" else r.state != "pending"


def _check_anchor(anchor: Anchor, record: TreeRecord) -> None:
    """A stored local anchor must be for this very tree and root (other types carry no tree fields)."""
    if not isinstance(anchor, LocalAnchor):
        return
    e = anchor.entry
    if (e.root, e.window_id, e.tree_index, e.tree_size) != (
        record.root.hex(),
        record.window_id,
        record.tree_index,
        record.size,
    ):
        raise CorruptRecordError(
            f"tree {record.window_id}/{record.tree_index}: the stored {anchor.type} anchor is for another root"
        )
