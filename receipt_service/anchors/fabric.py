"""Fabric anchor targets: one per channel, each root written by the ``anchor`` chaincode through the Gateway."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence

from receipt_verifier.model import FabricAnchor, PendingAnchor

from ..chain import ChainTip, WindowToChain, age_seconds, empty_window, lane_name, parse_tip, window_to_chain
from ..errors import AnchorBackendError, ConflictError
from ..fabric.evidence import BlockCache
from ..fabric.gateway import GatewayClient, GatewayError
from ..ledger import TreeRoot
from ..stores.base import Store, TreeRecord

READY_CACHE_SECONDS = 2.0
BATCH_PROOF_BYTES = 4_000_000  # transition proofs in one AppendWindows transaction (a block holds 10 MB)


def anchor_key(root: TreeRoot) -> str:
    """The chaincode key of a tree: ``<window_id>/<tree_index>`` (write-once on every channel)."""
    return f"{root.window_id}/{root.tree_index}"


class FabricChannelBackend:
    """Anchors roots on one channel. Idempotent: the chaincode answers a repeated (key, root) with the
    record first written, so a retry after a crash or timeout yields the original transaction.

    Chained (spec section 14.8): each lane's windows go one at a time, whole, with ``AppendWindow``,
    each the successor of the lane's tip; ``anchor`` (one tree, ``AnchorRoot``) is the unchained
    write, which the chaincode refuses once a channel holds a chained window."""

    type = "fabric"

    def __init__(
        self,
        client: GatewayClient,
        channel: str,
        chaincode: str = "anchor",
        concurrency: int = 32,
        evidence: BlockCache | None = None,
        *,
        chain_prefix: str = "",
        max_batch: int = 32,
    ) -> None:
        self.client = client
        self.evidence = evidence
        self.chain_prefix = chain_prefix
        self.max_batch = max_batch  # windows per AppendWindows transaction (the chaincode takes up to 64)
        self.channel = channel
        self.chaincode = chaincode
        self.concurrency = concurrency
        self.target = f"fabric:{channel}"
        self.last_error: str | None = None
        self._ready_at = 0.0

    async def anchor(self, root: TreeRoot) -> FabricAnchor:
        """Submit ``AnchorRoot`` and wait for its commit; the anchor names the transaction that wrote the key."""
        key = anchor_key(root)
        args = [key, root.root, str(root.tree_size), root.window_start, root.window_end]
        if root.heads_root is not None:  # a domain window: its subject-heads commitment in the same transaction
            args += [root.heads_root, str(root.heads_size)]
        try:
            committed = await self.client.submit(self.channel, self.chaincode, "AnchorRoot", args)
            record = _record(committed.result, key, root, self.channel)
            tx_id = record["tx_id"]
            block = committed.block_number
            if tx_id != committed.tx_id:  # written before (a retry): find the block of the original write
                code, block = await self.client.commit_status(self.channel, tx_id)
                if code != 0:
                    raise AnchorBackendError(f"{self.target}: the recorded tx {tx_id} is not valid (code {code})")
        except GatewayError as exc:
            self.last_error = str(exc)
            if "already anchored with root" in str(exc):
                raise ConflictError(f"{self.target}: {exc}") from None
            raise AnchorBackendError(f"{self.target}: {exc}") from None
        except AnchorBackendError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None
        anchor = FabricAnchor(
            anchor_id=f"{self.channel}:{tx_id[:16]}",
            channel=self.channel,
            tx_id=tx_id,
            block_number=block,
            key=key,
            chaincode=self.chaincode,
        )
        if self.evidence is not None:
            await self.evidence.prefetch(anchor)
        return anchor

    async def tip(self, lane: str) -> ChainTip | None:
        """The lane's tip on this channel (None: no chained window yet)."""
        try:
            raw = await self.client.evaluate(self.channel, self.chaincode, "GetTip", [lane])
        except GatewayError as exc:
            if "has no chained window" in str(exc):
                return None
            raise AnchorBackendError(f"{self.target}: reading the tip of lane {lane}: {exc}") from None
        return parse_tip(raw, lane)

    async def anchor_window(self, store: Store, trees: Sequence[TreeRecord]) -> list[FabricAnchor]:
        """Append the window of ``trees`` to its lane's chain (or find it there); one anchor per tree."""
        window_id = trees[0].window_id
        lane = lane_name(store.domain, self.chain_prefix)
        with self._failures(f"window {window_id}"):
            tip = await self.tip(lane)
            written = await self._written_tx(tip, trees[0])  # a retry, or appended by another leader
            if written is not None:
                tx_id = written
            else:
                win = await window_to_chain(store, tip, trees, lane)
                committed = await self.client.submit(self.channel, self.chaincode, "AppendWindow", win.args())
                tx_id = json.loads(committed.result)["tx_id"]
            block = await self._valid_block(tx_id)
        anchors = self._tree_anchors(tx_id, block, trees)
        if self.evidence is not None:
            await self.evidence.prefetch(anchors[0])
        return anchors

    async def anchor_windows(self, store: Store, windows: Sequence[Sequence[TreeRecord]]) -> list[list[FabricAnchor]]:
        """Append consecutive windows of a lane in one ``AppendWindows`` transaction (a backlog after an
        outage catches up this way); windows the chain already holds are found, not sent again. One list
        of anchors per window appended, in order: a prefix of ``windows`` when their proofs would not
        fit one transaction."""
        if len(windows) == 1:
            return [await self.anchor_window(store, windows[0])]
        lane = lane_name(store.domain, self.chain_prefix)
        first = windows[0][0].window_id
        with self._failures(f"windows from {first}"):
            tip = await self.tip(lane)
            done: list[list[FabricAnchor]] = []
            while len(done) < len(windows) and (tx := await self._written_tx(tip, windows[len(done)][0])) is not None:
                done.append(self._tree_anchors(tx, await self._valid_block(tx), windows[len(done)]))  # sends nothing
            rest = windows[len(done) :]
            if not rest:
                return done  # every one was on the chain already
            if done:
                tip = await self.tip(lane)
            wins = await self._successors(store, tip, rest, lane)
            args = [lane]
            for i, win in enumerate(wins):
                one = win.args()[1:]
                if i > 0:
                    one[1] = ""  # the chaincode links it to the record before it (spec section 14.8)
                args += one
            committed = await self.client.submit(self.channel, self.chaincode, "AppendWindows", args)
            records = [json.loads(line) for line in committed.result.split(b"\n")]
            if [r.get("window_id") for r in records] != [w.window_id for w in wins]:
                # the chaincode answered the stored tip: these windows are on the chain already (a retry of
                # ours, or another leader's, maybe in other transactions); each is found where it was written
                return done + [await self._found(lane, trees) for trees in rest[: len(wins)]]
            tx_id = str(records[-1]["tx_id"])
            block = await self._valid_block(tx_id)
        done += [self._tree_anchors(tx_id, block, trees) for trees in rest[: len(wins)]]
        if self.evidence is not None:
            await self.evidence.prefetch(done[-1][0])  # every window of a backlog holds trees
        return done

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """A Gateway error or a bad answer becomes an ``AnchorBackendError`` naming ``what`` (and is kept
        for ``ready``); success clears the last error."""
        try:
            yield
        except GatewayError as exc:
            self.last_error = str(exc)
            raise AnchorBackendError(f"{self.target}: {what}: {exc}") from None
        except (AnchorBackendError, ValueError, KeyError, TypeError) as exc:
            self.last_error = str(exc)
            raise AnchorBackendError(f"{self.target}: {what}: {exc}") from None
        self.last_error = None

    async def _valid_block(self, tx_id: str) -> int:
        """The block of a transaction the peer validated; an invalid one is an error."""
        code, block = await self.client.commit_status(self.channel, tx_id)
        if code != 0:
            raise AnchorBackendError(f"{self.target}: the recorded tx {tx_id} is not valid (code {code})")
        return block

    def _tree_anchors(self, tx_id: str, block: int, trees: Sequence[TreeRecord]) -> list[FabricAnchor]:
        """The anchor of each tree a transaction wrote."""
        return [
            FabricAnchor(
                anchor_id=f"{self.channel}:{tx_id[:16]}",
                channel=self.channel,
                tx_id=tx_id,
                block_number=block,
                key=f"{t.window_id}/{t.tree_index}",
                chaincode=self.chaincode,
            )
            for t in trees
        ]

    async def _found(self, lane: str, trees: Sequence[TreeRecord]) -> list[FabricAnchor]:
        """The anchors of a window already on the chain (never sent again: found, or an error to retry)."""
        tx_id = await self._written_tx(await self.tip(lane), trees[0])
        if tx_id is None:
            raise AnchorBackendError(f"window {trees[0].window_id} is not on the chain yet (the peer may lag)")
        return self._tree_anchors(tx_id, await self._valid_block(tx_id), trees)

    async def _written_tx(self, tip: ChainTip | None, tree: TreeRecord) -> str | None:
        """The transaction that appended the window of ``tree`` (the tip's, or an earlier one), or None."""
        if tip is not None and tip.window_id == tree.window_id:
            return tip.tx_id
        return await self._written(tree)

    async def _successors(
        self, store: Store, tip: ChainTip | None, windows: Sequence[Sequence[TreeRecord]], lane: str
    ) -> list[WindowToChain]:
        """Each window as the successor of the one before it, the first of ``tip``; the proofs together
        stay within ``BATCH_PROOF_BYTES`` (the first window goes whatever its size), so the transaction
        fits a block."""
        wins: list[WindowToChain] = []
        total = 0
        for trees in windows:
            win = await window_to_chain(store, tip, trees, lane)
            total += len(win.proof)
            if wins and total > BATCH_PROOF_BYTES:
                break
            wins.append(win)
            tip = ChainTip(b"", lane, win.seq, win.window_id, win.window_end, win.heads_root, win.heads_size, "")
        return wins

    async def empty_window(self, store: Store, idle: float, end: str) -> int | None:
        """Append an empty window up to ``end`` if the lane's tip ended ``idle`` seconds before; its seq, or None.

        A lane whose chain has not started yet gets none: its first window holds hashes."""
        lane = lane_name(store.domain, self.chain_prefix)
        try:
            tip = await self.tip(lane)
            if tip is None or age_seconds(tip.window_end) < idle:
                return None
            win = empty_window(tip, f"{store.instance_id}-e{tip.seq + 1}", end)
            await self.client.submit(self.channel, self.chaincode, "AppendWindow", win.args())
        except GatewayError as exc:
            raise AnchorBackendError(f"{self.target}: empty window of lane {lane}: {exc}") from None
        return win.seq

    async def _written(self, tree: TreeRecord) -> str | None:
        """The tx that wrote this tree's key, if one did (a window appended by another leader)."""
        key = f"{tree.window_id}/{tree.tree_index}"
        try:
            record = json.loads(await self.client.evaluate(self.channel, self.chaincode, "GetAnchor", [key]))
        except GatewayError as exc:
            if "is not anchored" in str(exc):
                return None
            raise
        if record.get("root") != tree.root.hex():
            raise ConflictError(f"{self.target}: key {key} is anchored with root {record.get('root')}, not ours")
        return str(record["tx_id"])

    async def ready(self) -> None:
        """The channel answers a query through the Gateway, and the last anchor attempt did not fail."""
        if self.last_error is not None:
            raise AnchorBackendError(f"anchoring on {self.channel} is failing: {self.last_error}")
        stalled = self.client.stalled.get(self.channel)
        if stalled is not None:
            raise AnchorBackendError(f"anchoring on {self.channel} waits for an ordering quorum: {stalled}")
        if time.monotonic() - self._ready_at < READY_CACHE_SECONDS:
            return
        try:
            await self.client.evaluate(self.channel, "qscc", "GetChainInfo", [self.channel])
        except GatewayError as exc:
            raise AnchorBackendError(f"channel {self.channel} does not answer: {exc}") from None
        self._ready_at = time.monotonic()

    def pending(self) -> PendingAnchor:
        """How a receipt names this target until it is done."""
        return PendingAnchor(self.type, self.target)

    async def close(self) -> None:
        """The shared Gateway client is closed by whoever opened it."""


def _record(payload: bytes, key: str, root: TreeRoot, channel: str) -> dict[str, str]:
    """The chaincode's stored record, checked against what was asked."""
    try:
        record = json.loads(payload)
        ok = (
            record["key"] == key
            and record["root"] == root.root
            and record["tree_size"] == root.tree_size
            and record.get("heads_root") == root.heads_root
            and record.get("heads_size") == root.heads_size
        )
        tx_id = record["tx_id"]
    except (ValueError, KeyError, TypeError):
        raise AnchorBackendError(f"fabric:{channel}: the chaincode answered {payload[:200]!r}") from None
    if not ok or not isinstance(tx_id, str) or len(tx_id) != 64:
        raise AnchorBackendError(f"fabric:{channel}: the chaincode stored {record} for key {key}, not root {root.root}")
    return {"tx_id": tx_id}
