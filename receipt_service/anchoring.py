"""The anchor-backend seam: where window roots go (the local ledger now, Fabric channels later)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from receipt_verifier.codec import anchor_to_dict
from receipt_verifier.model import Anchor, PendingAnchor

from .errors import AnchorBackendError
from .ledger import LocalLedger, TreeRoot, to_anchor


class AnchorBackend(Protocol):
    """One anchor target. ``anchor`` must be idempotent: the same root for the same tree may be
    sent again after a crash or a timeout, and must yield the same anchor, never a second one."""

    type: str
    target: str

    async def anchor(self, root: TreeRoot) -> Anchor: ...

    async def ready(self) -> None: ...

    def pending(self) -> PendingAnchor: ...


def iso_now(ns: int | None = None) -> str:
    """RFC 3339 UTC with microseconds."""
    ns = time.time_ns() if ns is None else ns
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalLedgerBackend:
    """The embedded anchor: appends each root to the signed local ledger in the data directory."""

    type = "local"

    def __init__(self, data_dir: Path) -> None:
        self.ledger = LocalLedger(data_dir)
        self.target = f"local-{self.ledger.key_id}"

    async def anchor(self, root: TreeRoot) -> Anchor:
        """Append (fsynced) in a worker thread; the same tree again returns its existing entry."""
        try:
            signed = await asyncio.to_thread(self.ledger.append, root, iso_now())
        except OSError as exc:
            raise AnchorBackendError(f"local ledger {self.ledger.path}: {exc.strerror or exc}") from None
        return to_anchor(self.ledger.key_id, signed)

    async def ready(self) -> None:
        """The ledger file must still be writable."""
        path = self.ledger.path
        if not path.exists():
            raise AnchorBackendError(f"local ledger {path} has disappeared")
        if not os.access(path, os.W_OK):
            raise AnchorBackendError(f"local ledger {path} is not writable")

    def pending(self) -> PendingAnchor:
        """How a receipt names this target until it is done."""
        return PendingAnchor(self.type, self.target)


def anchor_json(anchor: Anchor) -> str:
    """Compact JSON of an anchor, as stored."""
    return json.dumps(anchor_to_dict(anchor), separators=(",", ":"), sort_keys=True)
