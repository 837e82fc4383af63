"""The aggregator's retry path with a failing anchor target (a fake target: only the retry logic is under test)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from receipt_service.errors import AnchorBackendError
from receipt_service.ledger import TreeRoot
from receipt_service.metrics import Metrics
from receipt_service.stores.base import Batch
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.windows import Aggregator
from receipt_verifier.model import Anchor, PendingAnchor, UnknownAnchor


class FlakyTarget:
    """Fails its first ``failures`` calls, then anchors."""

    type = "flaky"
    target = "flaky-1"
    concurrency = 1

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def anchor(self, root: TreeRoot) -> Anchor:
        self.calls += 1
        if self.calls <= self.failures:
            raise AnchorBackendError(f"boom {self.calls}")
        return UnknownAnchor("flaky", f"flaky:{root.window_id}/{root.tree_index}", {"type": "flaky"})

    async def ready(self) -> None:
        return None

    def pending(self) -> PendingAnchor:
        return PendingAnchor(self.type, self.target)

    async def close(self) -> None:
        return None


async def test_a_failing_target_is_retried_and_every_failure_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    target = FlakyTarget(failures=2)
    metrics = Metrics()
    agg = Aggregator(store, [target], metrics, window_seconds=3600, retry_max_seconds=0.05)
    await agg.start()
    try:
        await store.add_batch(Batch("t", 1, os.urandom(16), os.urandom(32), os.urandom(16)))
        caplog.set_level(logging.WARNING, logger="receipt_service.windows")
        await agg.close_window()
        (tree,) = [t for t, _ in await store.open_anchor_jobs()]
        seen_error = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (job,) = await store.anchors_for(tree)
            if job.anchor_json is not None:
                break
            seen_error = job.last_error or seen_error
            await asyncio.sleep(0.005)
        assert job.anchor_json is not None and job.attempts == 3 and job.last_error is None
        assert seen_error is not None and seen_error.startswith("boom")
        assert f"anchoring {tree.window_id}/0 to flaky-1 failed, retrying in 0.05s: boom 1" in caplog.text
        assert 'receipt_anchor_failures_total{target="flaky-1"} 2.0' in metrics.render().decode()
    finally:
        await agg.drain(5)
        await store.close()
