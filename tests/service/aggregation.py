"""Fakes and helpers for the aggregator's tests: targets that record, a lead the test decides, batches."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from receipt_service.errors import AnchorBackendError, StoreError
from receipt_service.ledger import TreeRoot
from receipt_service.stores.base import Batch, Store
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.windows import Aggregator
from receipt_verifier import proof_id as pid
from receipt_verifier.heads import IndexedHeads, subject_key
from receipt_verifier.logs import log_root, record_leaf
from receipt_verifier.model import Anchor, PendingAnchor, UnknownAnchor


class FakeTarget:
    """What every fake anchor target shares: ready at once, nothing to close."""

    type = "fake"
    target = "fake-1"
    concurrency = 1

    async def ready(self) -> None:
        return None

    def pending(self) -> PendingAnchor:
        return PendingAnchor(self.type, self.target)

    async def close(self) -> None:
        return None


class FlakyTarget(FakeTarget):
    """Fails its first ``failures`` calls, then anchors."""

    type = "flaky"
    target = "flaky-1"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def anchor(self, root: TreeRoot) -> Anchor:
        self.calls += 1
        if self.calls <= self.failures:
            raise AnchorBackendError(f"boom {self.calls}")
        return UnknownAnchor("flaky", f"flaky:{root.window_id}/{root.tree_index}", {"type": "flaky"})


class Recorder(FakeTarget):
    """A target that records what it is asked to anchor (and can be told to fail with a non-service error)."""

    type = "rec"

    def __init__(self, target: str = "rec-1", bug: int = 0, concurrency: int = 1) -> None:
        self.target = target
        self.roots: list[TreeRoot] = []
        self.bug = bug
        self.concurrency = concurrency

    async def anchor(self, root: TreeRoot) -> Anchor:
        if self.bug:
            self.bug -= 1
            raise KeyError("a bug in the backend")
        self.roots.append(root)
        return UnknownAnchor("rec", f"rec:{root.window_id}/{root.tree_index}", {"type": "rec"})


class Gated(Recorder):
    """A recorder that anchors only once its gate is open."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def anchor(self, root: TreeRoot) -> Anchor:
        await self.gate.wait()
        return await super().anchor(root)


class Slow(Recorder):
    """A recorder that takes ``seconds`` per anchor."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def anchor(self, root: TreeRoot) -> Anchor:
        await asyncio.sleep(self.seconds)
        return await super().anchor(root)


class Lead:
    """The real store, with who leads decided by the test (as a shared store's lease would)."""

    def __init__(self, store: SQLiteStore, leading: bool = True) -> None:
        self._store = store
        self.leading = leading
        self.term = 1  # the lease's fencing token while leading
        self.down = False  # the store cannot be asked (an outage)
        self.resigned = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def lead(self) -> int | None:
        if self.down:
            raise StoreError("redis went away")
        return self.term if self.leading else None

    async def resign(self) -> None:
        self.resigned += 1

    def as_store(self) -> Store:
        """This wrapper where a ``Store`` is expected."""
        return cast(Store, self)


class LostAnswer:
    """The store commits, then the answer fails once (a lost reply, replicas late for WAIT)."""

    def __init__(self, lead: Lead, store: SQLiteStore, message: str) -> None:
        self.real, self.message, self.count = store.commit_window, message, 0
        lead.commit_window = self.commit

    async def commit(self, *args: Any, **kw: Any) -> None:
        await self.real(*args, **kw)
        if not self.count:
            self.count += 1
            raise StoreError(self.message)


def _receive_times() -> Iterator[int]:
    """Receive ticks as a lane's issuer gives them: from the clock, strictly increasing."""
    last = 0
    while True:
        last = max(last + 1_000, pid.unix_ns_to_ticks(time.time_ns()))
        yield last


_TICKS = _receive_times()


def _batch(n: int, subject: str = "") -> Batch:
    return Batch("t", next(_TICKS), os.urandom(16 * n), os.urandom(32 * n), os.urandom(16 * n), subject)


@contextlib.asynccontextmanager
async def running(agg: Aggregator, store: SQLiteStore, *, check: bool = True) -> AsyncIterator[Aggregator]:
    """Start ``agg``; on the way out drain it and close ``store``; with ``check`` the drain must have
    anchored everything (when the body failed, its error is the one that counts)."""
    await agg.start()
    try:
        yield agg
    finally:
        drained = await agg.drain(5)
        await store.close()
    assert drained or not check, "the drain left work open"


async def _until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _no_open_job(store: SQLiteStore) -> bool:
    return await store.open_anchor_jobs() == []


async def _open_job_from(store: SQLiteStore, seq: int) -> bool:
    return any(t.first_seq == seq for t, _ in await store.open_anchor_jobs())


async def _eventually(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


DOMAIN = "medical-history"
A, B = "did:example:patient-aaaa-0001", "did:example:patient-bbbb-0002"


def _leaves(batches: list[Batch], subject: str) -> list[bytes]:
    out: list[bytes] = []
    for b in batches:
        if b.subject != subject:
            continue
        for i in range(b.count):
            pid, h, n = (
                b.proof_ids[16 * i : 16 * i + 16],
                b.hashes[32 * i : 32 * i + 32],
                b.nonces[16 * i : 16 * i + 16],
            )
            out.append(record_leaf(n, pid, h, DOMAIN, subject, len(out)))
    return out


def _heads_of(*windows: list[Batch]) -> IndexedHeads:
    """The indexed heads of the logs of these windows' batches: subjects in the order they first came
    (by window, then by key within a window)."""
    batches = [b for w in windows for b in w]
    subjects: list[str] = []
    for w in windows:
        subjects += sorted({b.subject for b in w if b.subject} - set(subjects), key=subject_key)
    return IndexedHeads([(subject_key(s), len(_leaves(batches, s)), log_root(_leaves(batches, s))) for s in subjects])


class FailingCommit:
    """Every commit fails, after ``seconds``, and commits nothing (a full disk, replicas late for WAIT)."""

    def __init__(self, lead: Lead, message: str, seconds: float = 0.0) -> None:
        self.message, self.seconds, self.calls = message, seconds, 0
        lead.commit_window = self.commit

    async def commit(self, *args: Any, **kw: Any) -> None:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        raise StoreError(self.message)
