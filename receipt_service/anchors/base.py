"""The anchor-backend seam: what every target a window root goes to must do."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from receipt_verifier.codec import anchor_to_dict
from receipt_verifier.model import Anchor, PendingAnchor

from ..ids import iso_us
from ..ledger import TreeRoot
from ..stores.base import Store, TreeRecord


class AnchorBackend(Protocol):
    """One anchor target. ``anchor`` must be idempotent: the same root for the same tree may be
    sent again after a crash or a timeout, and must yield the same anchor, never a second one."""

    type: str
    target: str
    concurrency: int  # how many roots may be in flight to this target at once

    async def anchor(self, root: TreeRoot) -> Anchor: ...

    async def ready(self) -> None: ...

    def pending(self) -> PendingAnchor: ...

    async def close(self) -> None: ...


@runtime_checkable
class ChainedBackend(AnchorBackend, Protocol):
    """A target that keeps one chain of windows per lane (spec section 14.8): windows go whole and in order."""

    async def anchor_window(self, store: Store, trees: Sequence[TreeRecord]) -> Sequence[Anchor]: ...

    async def empty_window(self, store: Store, idle: float, end: str) -> int | None: ...


@runtime_checkable
class BatchedBackend(ChainedBackend, Protocol):
    """A chained target that appends several consecutive windows of a lane at once (a backlog)."""

    max_batch: int

    async def anchor_windows(self, store: Store, windows: Sequence[Sequence[TreeRecord]]) -> Sequence[Sequence[Anchor]]:
        """Anchors per window appended: a prefix of ``windows``, at least the first."""
        ...


def iso_now(ns: int | None = None) -> str:
    """RFC 3339 UTC with microseconds, truncated (never later than ``ns``)."""
    return iso_us(time.time_ns() if ns is None else ns)


def anchor_json(anchor: Anchor) -> str:
    """Compact JSON of an anchor, as stored."""
    return json.dumps(anchor_to_dict(anchor), separators=(",", ":"), sort_keys=True)
