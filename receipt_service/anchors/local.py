"""The ``local`` anchor target: the signed ledger, in the data directory or (several instances) in Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from redis.exceptions import RedisError

from receipt_verifier.model import Anchor, PendingAnchor

from ..chain import heads_transition
from ..errors import AnchorBackendError
from ..ledger import LocalLedger, TreeRoot, WindowProof, to_anchor, tree_root
from ..stores.base import Store, TreeRecord
from .base import iso_now
from .redis_ledger import RedisLedger


class LocalLedgerBackend:
    """The embedded anchor: appends each root to the signed local ledger in the data directory.

    A domain's windows are chained on the ledger (spec section 14.7): whole, in order, each with the
    transition proof from the domain's previous window, kept beside the ledger."""

    type = "local"
    concurrency = 1  # appends are serialised by the ledger anyway

    def __init__(self, data_dir: Path, shared: RedisLedger | None = None, *, lazy: bool = False) -> None:
        """``lazy``: a worker of ``serve --workers`` reads the ledger file only once it leads."""
        self.ledger: LocalLedger | RedisLedger = shared if shared is not None else LocalLedger(data_dir, lazy=lazy)
        self.target = f"local-{self.ledger.key_id}"

    async def anchor(self, root: TreeRoot) -> Anchor:
        """Append (fsynced) in a worker thread; the same tree again returns its existing entry."""
        try:
            signed = await asyncio.to_thread(self.ledger.append, root, iso_now())
        except OSError as exc:
            raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc.strerror or exc}") from None
        except RedisError as exc:
            raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc}") from None
        return to_anchor(self.ledger.key_id, signed)

    async def anchor_window(self, store: Store, trees: Sequence[TreeRecord]) -> list[Anchor]:
        """Append a window's trees; a domain's window as the next of its chain, with its transition proof."""
        roots = [tree_root(store.domain, t) for t in trees]
        if store.domain is None:  # the lane without a domain has no heads to chain
            return [await self.anchor(r) for r in roots]
        domain = store.domain
        try:
            done = await asyncio.to_thread(lambda: [self.ledger.find(r.window_id, r.tree_index) for r in roots])
            if all(d is not None for d in done):
                return [to_anchor(self.ledger.key_id, d) for d in done if d is not None]
            if done[0] is not None:  # a crash in the middle of the window: its place and proof stand
                seq = done[0].entry.chain_seq
                proof = next(
                    p for p in await asyncio.to_thread(self.ledger.proofs) if p.hash == done[0].entry.proof_hash
                )
            else:
                tip = await asyncio.to_thread(self.ledger.lane_tip, domain)
                _, text = await heads_transition(
                    store, None if tip is None else (tip.heads_size, tip.heads_root), trees, f"the ledger's {domain}"
                )
                seq = 0 if tip is None else tip.chain_seq + 1
                proof = WindowProof(domain, seq, trees[0].window_id, text)
            signed = await asyncio.to_thread(self.ledger.append_window, roots, proof, iso_now())
        except OSError as exc:
            raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc.strerror or exc}") from None
        except RedisError as exc:
            raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc}") from None
        return [to_anchor(self.ledger.key_id, s) for s in signed]

    async def empty_window(self, store: Store, idle: float, end: str) -> int | None:
        """The ledger gets no empty windows: its entries are signed by the operator alone, so silence there
        proves nothing anyway (a Fabric channel's empty windows are endorsed by the consortium)."""
        return None

    async def ready(self) -> None:
        """The ledger file must still be writable (a shared ledger must answer)."""
        if isinstance(self.ledger, RedisLedger):
            try:
                await asyncio.to_thread(len, self.ledger)
            except RedisError as exc:
                raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc}") from None
            return
        path = self.ledger.path
        if not path.exists():
            raise AnchorBackendError(f"local ledger {path} has disappeared")
        if not os.access(path, os.W_OK):
            raise AnchorBackendError(f"local ledger {path} is not writable")

    def pending(self) -> PendingAnchor:
        """How a receipt names this target until it is done."""
        return PendingAnchor(self.type, self.target)

    async def close(self) -> None:
        """Nothing to release: every append is already on disk."""
