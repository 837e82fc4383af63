"""The ``local`` anchor target: the signed ledger, in the data directory or (several instances) in Redis."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from redis.exceptions import RedisError

from receipt_verifier.model import Anchor, PendingAnchor

from ..errors import AnchorBackendError
from ..ledger import LocalLedger, TreeRoot, to_anchor
from .base import iso_now
from .redis_ledger import RedisLedger


class LocalLedgerBackend:
    """The embedded anchor: appends each root to the signed local ledger in the data directory."""

    type = "local"
    concurrency = 1  # appends are serialised by the ledger anyway

    def __init__(self, data_dir: Path, shared: RedisLedger | None = None) -> None:
        self.ledger: LocalLedger | RedisLedger = shared if shared is not None else LocalLedger(data_dir)
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
