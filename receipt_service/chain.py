"""Chained windows (spec sections 14.5-14.8): the lane's tip on a target, and the transition proof to a window.

A chained target accepts a lane's windows one at a time, each as the successor of the lane's tip, with
a proof that every subject log of the tip's heads only grew. The proof is computed here from the
store, so it can be computed again after any crash: the old heads are the store's heads as of the
tip's window, the new ones as of the window being anchored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads, subject_key
from receipt_verifier.logs import log_root, record_leaf
from receipt_verifier.merkle import consistency_proof

from .errors import AnchorBackendError, CorruptRecordError
from .stores.base import Store, SubjectHead, TreeRecord, insertion_order
from .transition import build_transition, consistency_from_frontier

GENESIS_PREV = "0" * 64
NO_DOMAIN_LANE = "_"  # the lane without a domain (v1 receipts) in a chain's key


def lane_name(domain: str | None, prefix: str = "") -> str:
    """The chain key of a lane: its domain, or ``_``; with a deployment's prefix, ``<prefix>.<that>``."""
    name = NO_DOMAIN_LANE if domain is None else domain
    return f"{prefix}.{name}" if prefix else name


def age_seconds(stamp: str) -> float:
    """Seconds since an RFC 3339 time (negative if it is ahead of this clock)."""
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def heads_after(heads: Mapping[str, tuple[int, bytes]], changed: Sequence[SubjectHead]) -> dict[str, tuple[int, bytes]]:
    """The heads once ``changed`` is applied: grown logs keep their place, new subjects follow by key."""
    out = dict(heads)
    new = sorted((h for h in changed if h.subject not in out), key=lambda h: subject_key(h.subject))
    for h in changed:
        if h.subject in out:
            out[h.subject] = (h.size, h.root)
    for h in new:
        out[h.subject] = (h.size, h.root)
    return out


def indexed_heads(heads: Mapping[str, tuple[int, bytes]]) -> IndexedHeads:
    """The indexed heads tree of heads given in insertion order."""
    return IndexedHeads([(subject_key(s), n, r) for s, (n, r) in heads.items() if n > 0])


@dataclass(frozen=True)
class ChainTip:
    """A lane's newest chained window on one target, as the target stored it."""

    raw: bytes  # the stored record, exactly (its hash is the successor's ``prev``)
    lane: str
    seq: int
    window_id: str
    window_end: str
    heads_root: str
    heads_size: int
    tx_id: str

    @property
    def hash(self) -> str:
        """``prev`` of the next window."""
        return hashlib.sha256(self.raw).hexdigest()


def parse_tip(raw: bytes, lane: str) -> ChainTip:
    """A stored tip record; a record that does not parse is a target answering nonsense."""
    try:
        doc = json.loads(raw)
        tip = ChainTip(
            raw,
            str(doc["lane"]),
            int(doc["seq"]),
            str(doc["window_id"]),
            str(doc["window_end"]),
            str(doc["heads_root"]),
            int(doc["heads_size"]),
            str(doc["tx_id"]),
        )
        if tip.lane != lane:
            raise ValueError("another lane's tip")
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorBackendError(f"the tip of lane {lane} is not a chain record ({exc}): {raw[:160]!r}") from None
    return tip


@dataclass(frozen=True)
class WindowToChain:
    """Everything a chained target needs to append one window after its tip."""

    lane: str
    seq: int
    prev: str
    window_id: str
    window_start: str
    window_end: str
    trees: tuple[TreeRecord, ...]
    heads_root: str
    heads_size: int
    proof: str  # the transition proof, JSON

    def args(self) -> list[str]:
        """``AppendWindow``'s ten arguments (spec section 14.8)."""
        trees = json.dumps(
            [{"index": t.tree_index, "root": t.root.hex(), "size": t.size} for t in self.trees], separators=(",", ":")
        )
        head = [self.lane, str(self.seq), self.prev, self.window_id, self.window_start, self.window_end]
        return [*head, trees, self.heads_root, str(self.heads_size), self.proof]


async def window_trees(store: Store, first: TreeRecord) -> list[TreeRecord]:
    """Every tree of ``first``'s window, in order (a window's trees hold consecutive seqs)."""
    trees = [first]
    while (nxt := await store.tree_for_seq(trees[-1].last_seq + 1)) is not None and nxt.window_id == first.window_id:
        if nxt.first_seq != trees[-1].last_seq + 1:
            break
        trees.append(nxt)
    return trees


async def heads_at(store: Store, upto: int | None) -> dict[str, tuple[int, bytes]]:
    """The lane's heads as of the window that ended at seq ``upto`` (None: before any window)."""
    return {} if upto is None or store.domain is None else await store.subject_heads(upto)


async def transition(
    store: Store, old_upto: int | None, new_upto: int
) -> tuple[IndexedHeads, IndexedHeads, dict[str, Any]]:
    """The heads as of the windows ending at ``old_upto`` and ``new_upto``, and the proof between them."""
    old = await heads_at(store, old_upto)
    new = await heads_at(store, new_upto)
    if old_upto is not None and await _lost_heads(store, old, new, old_upto):
        old = await _with_lost_heads(store, new, old_upto)
    proofs: dict[bytes, list[bytes]] = {}
    for subject, (size, root) in new.items():
        before = old.get(subject)
        if before is None or before == (size, root):
            continue
        if before[0] > size:
            raise CorruptRecordError(f"the stored log of {subject} shrank from {before[0]} to {size} records")
        proofs[subject_key(subject)] = await _consistency(store, subject, old_upto, before[0], size)
    old_tree, new_tree = indexed_heads(old), indexed_heads(new)
    return old_tree, new_tree, build_transition(old_tree, new_tree, proofs)


async def _lost_heads(
    store: Store, old: dict[str, tuple[int, bytes]], new: dict[str, tuple[int, bytes]], upto: int
) -> bool:
    """Whether a log had records by ``upto`` but no stored head then (a store from before compact ranges)."""
    for subject in new:
        if subject not in old and (await _log(store, subject, 1))[0][0] <= upto:
            return True
    return False


async def _with_lost_heads(store: Store, new: dict[str, tuple[int, bytes]], upto: int) -> dict[str, tuple[int, bytes]]:
    """The heads as of ``upto`` rebuilt from the records, for a store whose stored heads are gone (one
    from before compact ranges): each log placed by the window of its first record, then by key."""
    rows: list[tuple[str, int, bytes, int]] = []
    for subject, (size, _) in new.items():
        log = await _log(store, subject, size)
        leaves = [leaf for seq, leaf in log if seq <= upto]
        first = await store.tree_for_seq(log[0][0]) if leaves else None
        if first is not None:
            since = (await window_trees(store, first))[-1].last_seq
            rows.append((subject, len(leaves), log_root(leaves), since))
    return insertion_order(rows)


async def _log(store: Store, subject: str, size: int) -> list[tuple[int, bytes]]:
    """(seq, entry) of a subject's first ``size`` records, in log order."""
    domain = store.domain
    assert domain is not None
    rows = await store.subject_records(subject, -1, size)
    if [r.log_pos for r in rows] != list(range(size)):
        raise CorruptRecordError(f"the log of {subject} in {domain} lacks records (retention removed them?)")
    return [(r.seq, record_leaf(r.nonce, r.proof_id, r.hash, domain, subject, r.log_pos)) for r in rows]


async def _consistency(store: Store, subject: str, old_upto: int | None, old_size: int, new_size: int) -> list[bytes]:
    domain = store.domain
    assert domain is not None and old_upto is not None
    head = await store.subject_frontier(subject, old_upto)
    if head is None or head.size != old_size:  # the stored head is gone: the whole log, from its records
        leaves = [leaf for _, leaf in await _log(store, subject, new_size)]
        return consistency_proof([leaf_hash(x) for x in leaves], old_size)
    rows = await store.subject_records(subject, old_size - 1, new_size - old_size)
    if [r.log_pos for r in rows] != list(range(old_size, new_size)):
        raise CorruptRecordError(f"the log of {subject} in {domain} lacks records (retention removed them?)")
    leaves = [record_leaf(r.nonce, r.proof_id, r.hash, domain, subject, r.log_pos) for r in rows]
    return consistency_from_frontier(list(head.frontier), old_size, leaves)


async def heads_transition(
    store: Store, tip_heads: tuple[int, str] | None, trees: Sequence[TreeRecord], where: str
) -> tuple[IndexedHeads, str]:
    """The heads after the window of ``trees`` and the transition proof (JSON) to them from the tip's
    heads (size, root hex; None: a chain's first window, which starts from the empty heads).

    The transition starts from the heads of the store's previous window, which must be the tip's (an
    empty window in between changes no head)."""
    old_upto = None if tip_heads is None else trees[0].first_seq - 1  # heads rows outlive retention's purges
    old_tree, new_tree, proof = await transition(store, old_upto, trees[-1].last_seq)
    if tip_heads is not None and (old_tree.size, old_tree.root.hex()) != tip_heads:
        raise CorruptRecordError(
            f"{where}: the chain's tip holds other heads than this store's previous window: the chain was"
            " written by another deployment, or a window of this lane was never chained"
        )
    if trees[0].heads_root is not None and trees[0].heads_root != new_tree.root:
        raise CorruptRecordError(f"window {trees[0].window_id}: the stored heads do not give its committed root")
    return new_tree, json.dumps(proof, separators=(",", ":"))


async def window_to_chain(store: Store, tip: ChainTip | None, trees: Sequence[TreeRecord], lane: str) -> WindowToChain:
    """The window of ``trees`` as the successor of ``tip`` in ``lane`` (None: the lane's first window).

    The window starts where the tip ended, so the chain's windows tile time (the stored start is never
    earlier: windows start where the previous one ended)."""
    if tip is not None and datetime.fromisoformat(tip.window_end) > datetime.fromisoformat(trees[0].window_end):
        raise CorruptRecordError(
            f"lane {lane}: the chain's tip (window {tip.window_id}) ends {tip.window_end}, after window"
            f" {trees[0].window_id} ends ({trees[0].window_end}): clocks of instances disagree, or another writer"
            " moved the chain"
        )
    new_tree, proof = await heads_transition(
        store, None if tip is None else (tip.heads_size, tip.heads_root), trees, f"lane {lane}"
    )
    return WindowToChain(
        lane=lane,
        seq=0 if tip is None else tip.seq + 1,
        prev=GENESIS_PREV if tip is None else tip.hash,
        window_id=trees[0].window_id,
        window_start=trees[0].window_start if tip is None else tip.window_end,
        window_end=trees[0].window_end,
        trees=tuple(trees),
        heads_root=new_tree.root.hex(),
        heads_size=new_tree.size,
        proof=proof,
    )


def empty_window(tip: ChainTip, window_id: str, end: str) -> WindowToChain:
    """An empty window after ``tip`` up to ``end``: no tree, no head changed, so that silence is visible."""
    return WindowToChain(
        lane=tip.lane,
        seq=tip.seq + 1,
        prev=tip.hash,
        window_id=window_id,
        window_start=tip.window_end,
        window_end=end,
        trees=(),
        heads_root=tip.heads_root,
        heads_size=tip.heads_size,
        proof=json.dumps(
            {"old_size": tip.heads_size, "new_size": tip.heads_size, "changed": [], "inserted": [], "nodes": []},
            separators=(",", ":"),
        ),
    )
