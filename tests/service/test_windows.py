"""The aggregator's retry path with a failing anchor target (a fake target: only the retry logic is under test)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from receipt_service.anchors import iso_now
from receipt_service.anchors.local import LocalLedgerBackend
from receipt_service.chain import indexed_heads
from receipt_service.errors import AnchorBackendError, CorruptRecordError, LeaseLostError, StoreError
from receipt_service.ids import ProofIdIssuer
from receipt_service.ledger import TreeRoot
from receipt_service.metrics import Metrics
from receipt_service.stores.base import Batch, Store
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.trees import pack_tree
from receipt_service.windows import MAX_TREES_PER_WINDOW, Aggregator, TreeCache, Waiters, tree_records
from receipt_verifier import proof_id as pid
from receipt_verifier.hashing import bound_commitment
from receipt_verifier.heads import IndexedHeads, subject_key
from receipt_verifier.history import log_root, record_leaf
from receipt_verifier.merkle import MerkleTree
from receipt_verifier.model import Anchor, Binding, PendingAnchor, UnknownAnchor


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
    async with running(agg, store, check=False):
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


# ---------------------------------------------------------------- pure parts


def test_tree_records_cover_consecutive_ranges() -> None:
    trees = [pack_tree([os.urandom(32) for _ in range(n)]) for n in (3, 3, 1)]
    records = tree_records("w-7", 7, trees, "s", "e")
    assert [(r.window_id, r.tree_index, r.first_seq, r.last_seq, r.window_start, r.window_end) for r in records] == [
        ("w-7", 0, 7, 9, "s", "e"),
        ("w-7", 1, 10, 12, "s", "e"),
        ("w-7", 2, 13, 13, "s", "e"),
    ]
    assert [r.root for r in records] == [t.root for t in trees]


async def test_waiters_wake_exactly_their_range_either_way_round() -> None:
    w = Waiters()
    futs = {s: w.register(s) for s in (1, 5, 9, 10)}
    extra = w.register(5)
    w.wake_range(5, 9)  # a range wider than the waiters: scans the waiters
    assert [s for s, f in futs.items() if f.done()] == [5, 9] and extra.done()
    w.wake_range(0, 1_000_000)
    assert futs[1].done() and futs[10].done()
    narrow = [w.register(s) for s in range(100)]
    w.wake_range(40, 41)  # a range narrower than the waiters: scans the range
    assert [i for i, f in enumerate(narrow) if f.done()] == [40, 41]
    kept, dropped = w.register(3), w.register(3)
    w.discard(3, dropped)
    w.discard(3, dropped)  # twice is harmless
    w.discard(77_777, dropped)  # so is a seq nobody waits for
    w.wake_range(3, 3)
    assert kept.done() and not dropped.done()
    gone = w.register(200)
    w.discard(200, gone)
    assert 200 not in w._by_seq  # the last future of a seq takes its entry with it
    done_already = w.register(6)
    done_already.cancel()
    w.wake_range(6, 6)  # a cancelled waiter is skipped, not set
    assert done_already.cancelled()


def test_the_tree_cache_evicts_the_least_recently_used() -> None:
    cache = TreeCache(size=2)
    a, b, c = (pack_tree([bytes([i]) * 32]) for i in range(3))
    cache.put(("w", 0), a)
    cache.put(("w", 1), b)
    assert cache.get(("w", 0)) is a  # now the most recent
    cache.put(("w", 2), c)
    assert cache.get(("w", 1)) is None and cache.get(("w", 0)) is a and cache.get(("w", 2)) is c
    cache.put(("w", 2), c)  # again: still two
    assert cache.get(("w", 0)) is a
    assert TreeCache().get(("x", 0)) is None


# ---------------------------------------------------------------- the aggregator on a real SQLite store and ledger


class Recorder:
    """A target that records what it is asked to anchor (and can be told to fail with a non-service error)."""

    type = "rec"
    concurrency = 1

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

    async def ready(self) -> None:
        return None

    def pending(self) -> PendingAnchor:
        return PendingAnchor(self.type, self.target)

    async def close(self) -> None:
        return None


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


async def test_a_window_is_split_into_trees_and_every_tree_anchored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    local = LocalLedgerBackend(tmp_path)
    rec = Recorder()
    metrics = Metrics()
    agg = Aggregator(store, [local, rec], metrics, window_seconds=3600, max_leaves=3)
    async with running(agg, store):
        assert await agg.close_window() == 0 and agg.last_error is None  # nothing to close
        for n in (2, 2, 3):
            await store.add_batch(_batch(n))
        waiter = agg.waiters.register(7)
        assert await agg.close_window() == 7
        assert waiter.done()
        await _until(lambda: len(rec.roots) == 3 and len(local.ledger) == 3)
        sizes = sorted((r.tree_index, r.tree_size) for r in rec.roots)
        assert sizes == [(0, 3), (1, 3), (2, 1)]  # at most max_leaves each, in order
        window_id = f"{store.instance_id}-1"  # seqs start at 1
        assert {r.window_id for r in rec.roots} == {window_id}
        assert all(r.domain is None and r.heads_root is None and r.heads_size is None for r in rec.roots)
        entries = [s.entry for s in local.ledger.entries()]
        assert sorted((e.window_id, e.tree_index, e.tree_size) for e in entries) == [
            (window_id, 0, 3),
            (window_id, 1, 3),
            (window_id, 2, 1),
        ]
        for i in range(3):
            assert agg.trees.get((window_id, i)) is not None
            tree = await store.tree_for_seq([1, 4, 7][i])
            assert tree is not None and tree.root.hex() == next(r.root for r in rec.roots if r.tree_index == i)
        text = metrics.render().decode()
        assert "receipt_window_leaves_count 1.0" in text and "receipt_window_leaves_sum 7.0" in text
        # observed once the anchor is recorded, a step after the target answered (a race under CI load)
        await _until(lambda: 'receipt_anchor_seconds_count{target="rec-1"} 3.0' in metrics.render().decode())


async def test_a_backlog_larger_than_a_window_is_closed_in_several(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    rec = Recorder()
    agg = Aggregator(store, [rec], Metrics(), window_seconds=3600, max_leaves=1)
    async with running(agg, store):
        for _ in range(MAX_TREES_PER_WINDOW + 5):
            await store.add_batch(_batch(1))
        assert await agg.close_window() == MAX_TREES_PER_WINDOW + 5
        await _until(lambda: len(rec.roots) == MAX_TREES_PER_WINDOW + 5)
        windows = sorted({r.window_id for r in rec.roots})
        assert windows == sorted([f"{store.instance_id}-1", f"{store.instance_id}-{MAX_TREES_PER_WINDOW + 1}"])


async def test_a_window_that_fails_says_why_until_one_closes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))

        async def broken(limit: int, upto: int | None = None) -> list[Any]:
            raise StoreError("disk on fire")

        lead.backlog = broken
        with pytest.raises(StoreError):
            await agg.close_window()
        assert agg.last_error == "StoreError: disk on fire"
        del lead.backlog
        assert await agg.close_window() == 1 and agg.last_error is None


async def test_the_lead_decides_who_closes_and_anchors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store, leading=False)
    rec = Recorder(concurrency=2)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.02)
    agg.lease_check_seconds = 0.02
    caplog.set_level(logging.INFO, logger="receipt_service.windows")
    async with running(agg, store):
        names = sorted(t.get_name() for t in agg._tasks)
        assert names == ["anchor-rec-1-0", "anchor-rec-1-1", "lease", "watch", "window-clock"]
        await store.add_batch(_batch(2))
        await asyncio.sleep(0.15)
        assert not agg.leading and rec.roots == [] and await store.backlog(10) != []  # a follower closes nothing
        lead.leading = True
        await _until(lambda: len(rec.roots) == 1)
        assert "lane v1: this instance leads now (closes windows, sends anchors)" in caplog.text
        # a window committed while leading, whose anchor is still open when the lead moves away
        rec.bug = 10**6
        await store.add_batch(_batch(1))
        await _eventually(lambda: _open_job_from(store, 3))
        lead.leading = False
        await _until(lambda: not agg.leading)
        assert caplog.text.count("lane v1: another instance leads now; this one only serves") == 1
        assert caplog.text.count("lane v1: this instance leads now") == 1  # logged on a change, not at every check
        rec.bug = 0
        (open_tree,) = [t for t, _ in await store.open_anchor_jobs()]
        for _ in range(2):  # a job that reaches a follower's queue is dropped; both workers live on
            agg._queues["rec-1"].put_nowait(open_tree)
        await asyncio.sleep(0.1)
        assert len(rec.roots) == 1  # a follower never sends an anchor
        lead.leading = True  # it leads again: the open job is resumed from the store
        await _until(lambda: len(rec.roots) == 2)
        assert rec.roots[1].tree_size == 1
    assert lead.resigned == 1  # a leader that drained hands the lead over


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


async def test_a_domain_window_commits_to_every_subject_log(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    local = LocalLedgerBackend(tmp_path)
    rec = Recorder()
    agg = Aggregator(store, [local, rec], Metrics(), window_seconds=3600)
    await agg.start()
    sent: list[Batch] = []

    async def add(b: Batch) -> None:
        sent.append(b)
        await store.add_batch(b)

    try:
        await add(_batch(2, A))
        await add(_batch(1, B))
        await add(_batch(1))  # no subject: in the tree, in no log
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)
        heads = _heads_of(sent)
        root = rec.roots[0]
        assert (root.domain, root.heads_root, root.heads_size) == (DOMAIN, heads.root.hex(), 3)
        entry = local.ledger.entries()[0].entry
        assert (entry.domain, entry.heads_root, entry.heads_size) == (DOMAIN, heads.root.hex(), 3)
        await add(_batch(3, A))  # the log goes on from its stored compact range
        await agg.close_window()
        await add(_batch(1, B))  # a window that only moves B keeps A's newest head
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 3)
        assert rec.roots[1].heads_root == _heads_of(sent[:4]).root.hex()
        assert rec.roots[2].heads_root == _heads_of(sent).root.hex()
        head = await store.subject_frontier(A)
        assert head is not None and (head.size, head.root) == (5, log_root(_leaves(sent, A)))
    finally:
        assert await agg.drain(5)
        await store.close()


async def test_a_log_without_its_compact_range_is_rebuilt_from_its_records(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    rec = Recorder()
    agg = Aggregator(store, [rec], Metrics(), window_seconds=3600)
    async with running(agg, store, check=False):
        first = _batch(2, A)
        await store.add_batch(first)
        await agg.close_window()
        second = _batch(2, A)  # received after that window closed (one received before it is refused)
        await store.add_batch(second)
        store._w.execute("DELETE FROM subject_heads WHERE subject = ?", (A,))  # the stored range is gone
        agg._heads = None
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 2)
        head = await store.subject_frontier(A)
        assert head is not None and (head.size, head.root) == (4, log_root(_leaves([first, second], A)))
        assert rec.roots[1].heads_root == _heads_of([first, second]).root.hex()
        third = _batch(1, A)
        await store.add_batch(third)
        store._w.execute("DELETE FROM subject_heads WHERE subject = ?", (A,))
        store._w.execute("DELETE FROM batches WHERE first_seq = 1")  # and its first records
        with pytest.raises(CorruptRecordError) as err:
            await agg.close_window()
        assert str(err.value) == f"the log of {A} in {DOMAIN} lacks records (retention removed them?)"


async def test_retention_purges_anchored_trees_only_on_the_leader(tmp_path: Path) -> None:
    for leading in (False, True):
        store = SQLiteStore(tmp_path / str(leading))
        rec = Recorder()
        first = Aggregator(store, [rec], Metrics(), window_seconds=3600)
        await first.start()
        await store.add_batch(_batch(3))
        await first.close_window()
        await _until(lambda rec=rec: len(rec.roots) == 1)
        assert await first.drain(5)
        lead = Lead(store, leading=leading)
        agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retention_seconds=0.001)
        await agg.start()
        assert "retention" in {t.get_name() for t in agg._tasks}
        try:
            await asyncio.sleep(0.2)
            assert (await store.tree_for_seq(1) is None) is leading
        finally:
            await agg.drain(5)
            await store.close()


async def test_a_drain_that_cannot_anchor_in_time_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    rec = Recorder(bug=10**6)
    agg = Aggregator(store, [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.01)
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        t0 = time.monotonic()
        assert not await agg.drain(0.3)
        assert time.monotonic() - t0 < 5
        assert all(t.done() for t in agg._tasks)
    finally:
        await store.close()
    assert [t for t, _ in await SQLiteStore(tmp_path).open_anchor_jobs()] != []  # still open, for the next start


async def test_a_backend_bug_is_logged_in_full_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    rec = Recorder(bug=2)
    metrics = Metrics()
    agg = Aggregator(store, [rec], metrics, window_seconds=3600, retry_max_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store):
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)
        assert "anchor backend rec-1 raised" in caplog.text and "KeyError" in caplog.text
        assert "failed, retrying in 0.05s: KeyError: 'a bug in the backend'" in caplog.text
        assert "failed, retrying in 0.01s" in caplog.text  # the backoff is capped
        assert 'receipt_anchor_failures_total{target="rec-1"} 2.0' in metrics.render().decode()


async def test_the_clock_closes_windows_and_a_lost_lease_is_rechecked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.05)
    agg.lease_check_seconds = 3600
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: len(rec.roots) == 1)  # closed by the clock, not by the test
        calls = 0
        real = store.commit_window

        async def lost(*args: Any, **kw: Any) -> None:
            nonlocal calls
            calls += 1
            lead.leading = False
            raise LeaseLostError("another instance took the lead")

        lead.commit_window = lost
        await store.add_batch(_batch(1))
        await _until(lambda: calls == 1)
        await _until(lambda: not agg.leading)  # the clock asked the store at once, not at the next lease check
        lead.commit_window = real
        await asyncio.sleep(0.2)
        assert calls == 1  # a follower's clock closes nothing
        assert "another instance took the lead" in caplog.text
        lead.leading = True
        await agg._check_lead()

        async def broken(limit: int, upto: int | None = None) -> list[Any]:
            raise StoreError("disk on fire")

        lead.backlog = broken
        quiet = (
            "lane v1: window not closed (its hashes stay in the backlog; retrying every 0.05s, quietly): disk on fire"
        )
        await _until(lambda: quiet in caplog.text)  # an outage of the store: said once, without a traceback
        del lead.backlog


async def test_a_lease_run_out_and_taken_again_is_a_new_term(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The lease ran out in a Redis outage; the lease task took it again (a new fencing token) while a window
    was on its way under the old one, and another leader may have closed windows in between. The old
    window is refused; the instance goes on leading, reads the lane again (the other leader's heads and open
    anchors) and its clock survives a store that fails at the recheck."""
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead, other = Lead(store), Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.05)
    agg.lease_check_seconds = 0.05
    between = Aggregator(other.as_store(), [Recorder()], Metrics(), window_seconds=3600)  # leads between the terms
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    real_commit, real_lead = store.commit_window, lead.lead
    sent: list[Batch] = []
    async with running(agg, store):
        sent.append(_batch(2, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 1)
        refused = 0

        async def fenced(trees: Any, targets: Any, heads: Any = (), *, term: int | None = None) -> None:
            nonlocal refused
            if refused == 0:  # the other leader closes this window; this instance then takes the lease again
                await between.close_window()
                lead.term += 2
            if agg._term != lead.term:  # the store compares the fencing token
                refused += 1
                raise LeaseLostError("lane v1: this instance no longer leads the lane; another instance took over")
            await real_commit(trees, targets, heads, term=term)

        failures = 0

        async def failing_once() -> int | None:
            nonlocal failures
            failures += 1
            if failures == 1:  # the recheck right after the refusal meets the store failing
                raise StoreError("redis went away")
            return await real_lead()

        lead.commit_window, lead.lead = fenced, failing_once
        sent.append(_batch(1, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 2)  # the other leader's window: its open anchor resumed here
        assert agg.leading and agg._term == 3
        assert rec.roots[1].heads_root == _heads_of(sent).root.hex()
        sent.append(_batch(3, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 3)  # the clock lived on; its window goes on from the other's heads
        assert rec.roots[2].heads_root == _heads_of(sent).root.hex()
        assert [r.tree_size for r in rec.roots] == [2, 1, 3]
    assert caplog.text.count("the lead was taken again (a new term)") == 1, caplog.text
    assert "Traceback" not in caplog.text and refused >= 1
    await between.drain(1)


async def test_watching_other_instances_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    calls = 0

    async def flaky_watch(wake: Any) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise StoreError("pubsub down")

    lead.watch = flaky_watch
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    async with running(agg, store, check=False):
        await _until(lambda: calls == 3, timeout=8)
        line = "watching other instances' changes failed, retrying every second, quietly: pubsub down"
        assert caplog.text.count("watching other instances") == 1 and line in caplog.text  # once per outage


async def test_a_restarted_aggregator_resumes_open_jobs_and_keeps_every_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    broken, gone = Recorder(bug=10**6), Recorder("gone-1", bug=10**6)
    first = Aggregator(store, [broken, gone], Metrics(), window_seconds=3600, retry_max_seconds=0.01)
    assert first.last_error is None and not first.leading
    await first.start()
    a = _batch(2, A)
    await store.add_batch(a)
    await first.close_window()
    assert not await first.drain(0.2)  # its anchor job stays open
    fixed = Recorder()
    again = Aggregator(store, [fixed], Metrics(), window_seconds=3600)
    again.lease_check_seconds = 0.02
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(again, store):
        await _until(lambda: len(fixed.roots) == 1)  # resumed from the store, not from memory
        await asyncio.sleep(0.2)
        assert len(fixed.roots) == 1, "a leader resumes open jobs when it takes the lead, not at every lease check"
        window = f"{store.instance_id}-1"
        warning = f"tree {window}/0 waits for target gone-1, which is not configured"
        assert caplog.text.count(warning) == 1  # at the takeover only, not at each of the ten lease checks since
        b = _batch(1, B)
        await store.add_batch(b)  # a window that only moves B still commits A's head
        await again.close_window()
        await _until(lambda: len(fixed.roots) == 2)
        assert fixed.roots[1].heads_root == _heads_of([a], [b]).root.hex()


async def test_anchoring_wakes_waiters_and_records_its_time(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    gate = asyncio.Event()
    rec = Gated(gate)
    metrics = Metrics()
    agg = Aggregator(store, [rec], metrics, window_seconds=3600)
    async with running(agg, store):
        assert await agg.close_window() == 0  # an empty window: the next one starts now
        before = iso_now()
        await store.add_batch(_batch(2))
        await agg.close_window()
        waiter = agg.waiters.register(2)  # after the commit: only the anchor can wake it
        gate.set()
        await asyncio.wait_for(waiter, 5)
        (tree,) = [r for r in [await store.tree_for_seq(1)] if r is not None]
        (job,) = await store.anchors_for(tree)
        assert job.done_ns is not None and job.done_ns >= job.created_ns
        (root,) = rec.roots
        assert (root.window_start, root.window_end) == (tree.window_start, tree.window_end)
        assert root.window_start <= before  # the window began when the aggregator did, not at its close
        text = metrics.render().decode()
        seconds = float(text.split('receipt_anchor_seconds_sum{target="rec-1"} ')[1].split()[0])
        built = float(text.split("receipt_window_build_seconds_sum ")[1].split()[0])
        assert 0 <= seconds < 60 and 0 <= built < 60
        again = iso_now()
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 2)
        assert tree.window_end <= rec.roots[1].window_start <= again  # the next window starts at the last close
        assert sorted(t.get_name() for t in agg._tasks if t.get_name().startswith("anchor-")) == ["anchor-rec-1-0"]


async def test_retry_delays_double_up_to_the_cap_and_failures_to_record_them_are_survived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)

    async def unrecordable(*args: Any) -> None:
        raise StoreError("cannot record the failure")

    lead.record_anchor_failure = unrecordable
    rec = Recorder(bug=4)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.15)
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store):
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)
        delays = [
            r.getMessage().split("retrying in ")[1].split("s:")[0]
            for r in caplog.records
            if "retrying" in r.getMessage()
        ]
        assert delays == ["0.05", "0.10", "0.15", "0.15"]


async def test_a_drain_whose_last_window_fails_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    await agg.start()

    async def broken(limit: int, upto: int | None = None) -> list[Any]:
        raise StoreError("disk on fire")

    lead.backlog = broken
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    try:
        assert not await agg.drain(0.5)  # tried again while the grace lasts, said once
        assert (
            caplog.text.count("drain: the last window is not closed yet (tried again while it may): disk on fire") == 1
        )
        assert "drain: the last window is not closed, 0 anchor(s) being sent, 0 job(s) open" in caplog.text
        assert lead.resigned == 1  # handed over: the next leader closes it
    finally:
        await store.close()


async def test_retention_keeps_recent_trees_retries_and_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    await agg.start()
    await store.add_batch(_batch(2))
    await agg.close_window()
    await _until(lambda: len(rec.roots) == 1)
    assert await agg.drain(5)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retention_seconds=3600)
    await agg.start()  # it purges at once: an anchored tree of a second ago is kept
    try:
        await asyncio.sleep(0.2)
        assert await store.tree_for_seq(1) is not None  # an hour has not passed
    finally:
        await agg.drain(5)
    calls = 0
    real = store.purge

    async def flaky_purge(before_ns: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("busy")
        return await real(before_ns)

    lead.purge = flaky_purge
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retention_seconds=0.001)
    caplog.set_level(logging.INFO, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await _until(lambda: calls >= 2, timeout=5)  # the first purge failed: it runs again a period later
        await _eventually(lambda: _gone(store, 1), timeout=5)
        # the purge's commit is visible to readers before the loop runs the code after it, which logs
        await _until(lambda: "retention: removed 2 receipts" in caplog.text, timeout=5)


async def _gone(store: SQLiteStore, seq: int) -> bool:
    return await store.tree_for_seq(seq) is None


async def test_extending_a_log_reads_none_of_its_records(tmp_path: Path) -> None:
    """A window's work grows with its new records, not with the history (spec section 14)."""
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead = Lead(store)
    reads = 0
    real = store.subject_records

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real(*args)

    lead.subject_records = counted
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    async with running(agg, store):
        sent = []
        for n in (2, 3):
            sent.append(_batch(n, A))
            await store.add_batch(sent[-1])
            await agg.close_window()
        await _until(lambda: len(rec.roots) == 2)
        assert reads == 0
        assert rec.roots[1].heads_root == _heads_of(sent).root.hex()


async def test_a_failing_lease_check_is_logged_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    calls = 0

    async def flaky_lead() -> int:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 6 or 9 <= calls <= 10:  # the check at start succeeds; then two outages
            raise StoreError("redis went away")
        return 1

    lead.lead = flaky_lead
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.02
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await _until(lambda: calls >= 12)
        lines = [r.getMessage() for r in caplog.records]
        failed = "lease check failed (retrying every 0.02s, quietly): redis went away"
        assert lines == [failed, lines[1], failed, lines[3]], lines
        assert re.fullmatch(r"lease check works again after 5 failed attempt\(s\) over \d+\.\ds", lines[1])
        assert re.fullmatch(r"lease check works again after 2 failed attempt\(s\) over \d+\.\ds", lines[3])
        assert agg.leading


async def test_a_store_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24: while the store is down, the leader's clock fails every tick; the log says so once, without
    a traceback, and once more when windows close again (a bug still logs every time, with its traceback)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    calls = 0
    real = store.seal

    async def flaky_seal(floor: int) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 30:
            raise StoreError("redis went away")
        if calls == 31:
            raise KeyError("a bug")
        return await real(floor)

    lead.seal = flaky_seal
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await _until(lambda: calls >= 34)
    records = [r for r in caplog.records if "window" in r.getMessage()]
    lines = [r.getMessage() for r in records]
    assert lines[0] == (
        "lane v1: window not closed (its hashes stay in the backlog; retrying every 0.01s, quietly): redis went away"
    )
    assert records[0].levelname == "ERROR" and records[0].exc_info is None
    assert re.fullmatch(r"lane v1: windows close again after 29 failed attempt\(s\) over \d+\.\ds", lines[2]), lines
    assert lines[1] == "lane v1: window not closed (its hashes stay in the backlog for the next one)"
    assert records[1].exc_info is not None  # the bug, in full
    assert len(lines) == 3, lines


async def test_domain_trees_bind_every_leaf_and_a_failed_commit_forgets_no_head(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    async with running(agg, store):
        a, plain = _batch(2, A), _batch(1)
        await store.add_batch(a)
        await store.add_batch(plain)
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)
        values = [
            *_leaves([a], A),
            bound_commitment(plain.nonces, plain.proof_ids, plain.hashes, Binding(DOMAIN).digest()),
        ]
        assert rec.roots[0].root == MerkleTree.from_commitments(values).root.hex()  # v2 leaves, bound to the domain
        real = store.commit_window

        async def fails_once(*args: Any, **kw: Any) -> None:
            lead.commit_window = real
            raise StoreError("the commit may or may not have happened")

        lead.commit_window = fails_once
        b = _batch(1, B)
        await store.add_batch(b)
        with pytest.raises(StoreError):
            await agg.close_window()
        await agg.close_window()  # the heads are read again from the store, A's among them
        await _until(lambda: len(rec.roots) == 2)
        assert rec.roots[1].heads_root == _heads_of([a], [b]).root.hex()


async def test_a_drain_waits_for_an_anchor_in_flight(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    gate = asyncio.Event()
    rec = Gated(gate)
    agg = Aggregator(store, [rec], Metrics(), window_seconds=3600)
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        await agg.close_window()
        asyncio.get_running_loop().call_later(0.2, gate.set)
        assert await agg.drain(5)  # it waited for the anchor rather than giving up
        assert len(rec.roots) == 1
    finally:
        await store.close()


class OneGateEach(Recorder):
    """Two workers: each anchor call waits for its own gate (in the order the calls came)."""

    def __init__(self) -> None:
        super().__init__(concurrency=2)
        self.gates = [asyncio.Event(), asyncio.Event()]
        self.entered = 0

    async def anchor(self, root: TreeRoot) -> Anchor:
        gate = self.gates[self.entered]
        self.entered += 1
        await gate.wait()
        return await super().anchor(root)


async def test_a_drain_waits_for_every_anchor_in_flight_of_a_target(tmp_path: Path) -> None:
    """Two anchors of one target in flight; the first ends: the drain must still wait for the second."""
    store = SQLiteStore(tmp_path)
    rec = OneGateEach()
    agg = Aggregator(store, [rec], Metrics(), window_seconds=3600)
    await agg.start()
    try:
        for _ in range(2):
            await store.add_batch(_batch(1))
            await agg.close_window()
        await _until(lambda: rec.entered == 2)  # both workers are anchoring
        rec.gates[0].set()
        await _until(lambda: len(rec.roots) == 1)
        asyncio.get_running_loop().call_later(0.3, rec.gates[1].set)
        assert await agg.drain(5)
        assert len(rec.roots) == 2, "the drain ended while an anchor was still in flight"
    finally:
        await store.close()


def _redis_batch(store: RedisStore, n: int, subject: str) -> Batch:
    issued = ProofIdIssuer(store.clock_seq, store.last_ticks()).issue_batch(
        [os.urandom(32) for _ in range(n)], time.time_ns()
    )
    hashes = os.urandom(32 * n)
    return Batch("t", issued.first_ticks, issued.proof_id_bytes, hashes, os.urandom(16 * n), subject)


@pytest.mark.parametrize("retaken", ["before the window", "while the window is built"])
async def test_a_window_built_in_one_term_is_never_committed_in_the_next(redis_url: str, retaken: str) -> None:
    """Instance a's lease ran out; b led, moved subject B's head and stopped; a takes the lease again. A
    window a built on its old term's cached heads would drop B's log from the heads: it is refused (found by
    a review, with this reproducer) and built again on the store's heads (real redis-server)."""
    sa = RedisStore(RedisLink(RedisTarget.parse(redis_url)), domain=DOMAIN, lease_seconds=0.5)
    sb = RedisStore(RedisLink(RedisTarget.parse(redis_url)), domain=DOMAIN, lease_seconds=0.5)
    a = Aggregator(sa, [Recorder()], Metrics(), window_seconds=3600)
    b = Aggregator(sb, [Recorder()], Metrics(), window_seconds=3600)
    try:
        await a._check_lead()
        first = a._term
        await sa.add_batch(_redis_batch(sa, 2, A))
        await a.close_window()  # a caches the heads: {A}
        await asyncio.sleep(0.7)  # a's lease runs out (a paused, or Redis out of its reach)
        await b._check_lead()
        assert b.leading
        await sb.add_batch(_redis_batch(sb, 1, B))
        await b.close_window()  # the heads: {A, B}
        await sb.resign()
        await sa.add_batch(_redis_batch(sa, 1, A))
        real = sa.commit_window
        refused = 0

        async def lease_task_lands(*args: Any, **kw: Any) -> None:
            nonlocal refused
            if not refused:
                await sa.lead()  # the lease task's check reaches Redis while the window is on its way
                refused += 1
            await real(*args, **kw)

        if retaken == "while the window is built":
            sa.commit_window = lease_task_lands
            with pytest.raises(LeaseLostError, match=r"taken again|the lead changed while the window was built"):
                await a.close_window()  # refused by the store's term, or first by the lapse of a's own lease
        await a._check_lead()  # the clock asks at once after a refusal; the lease task would in a moment
        assert a._term is not None and first is not None and a._term > first
        await a.close_window()  # built again, on the store's heads
        last = await sa.tree_for_seq(4)
        assert last is not None and (await sa.stats()).backlog == 0
        want = indexed_heads(await sa.subject_heads())
        assert (last.heads_root, last.heads_size) == (want.root, want.size) and want.size == 3
    finally:
        await sa.link.close()
        await sb.link.close()


async def test_a_new_term_does_not_send_a_tree_in_flight_twice(tmp_path: Path) -> None:
    """Two workers on one target: the tree the first is sending is not queued again for the second when
    the lease is taken again (found by a review: it was anchored twice)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    gate = asyncio.Event()
    rec = Gated(gate)
    rec.concurrency = 2
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.02
    async with running(agg, store):
        await store.add_batch(_batch(2))
        await agg.close_window()
        await _until(lambda: len(agg._sending["rec-1"]) == 1)  # the first worker is sending the tree
        lead.term += 1  # the lease ran out and was taken again: open jobs are read again
        await _until(lambda: agg._term == lead.term)
        await asyncio.sleep(0.1)
        assert len(agg._sending["rec-1"]) == 1
        gate.set()
        await _until(lambda: len(rec.roots) == 1)
        await asyncio.sleep(0.1)
        assert len(rec.roots) == 1


async def test_a_lead_the_store_does_not_confirm_within_its_lease_lapses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the store cannot be asked, the instance leads no longer than the lease it last obtained: by
    then another may lead. It leads again once the store confirms it."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    down = False

    async def lease() -> int | None:
        if down:
            raise StoreError("redis went away")
        return lead.term if lead.leading else None

    lead.lead = lease
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.02)
    agg.lease_check_seconds = 0.05
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: len(rec.roots) == 1)
        down, t0 = True, time.monotonic()
        await _until(lambda: not agg.leading)
        assert 0.2 < time.monotonic() - t0 < 1.0, "the lead lapsed about a lease after it was last confirmed"
        await store.add_batch(_batch(1))
        await asyncio.sleep(0.2)
        assert len(rec.roots) == 1  # no window closed while the lead is not confirmed
        down = False
        await _until(lambda: len(rec.roots) == 2)  # confirmed again: it leads (a new term) and closes
    assert caplog.text.count("has not confirmed the lead within its lease (0.3s)") == 1


async def test_a_takeover_whose_read_of_open_jobs_fails_is_taken_again(tmp_path: Path) -> None:
    """The read of the open anchor jobs fails once as the instance takes over (Redis just back): it does not
    lead on without them (found by a second review: the old leader's job stayed unqueued for the term)."""
    store = SQLiteStore(tmp_path)
    old = Aggregator(Lead(store).as_store(), [Recorder()], Metrics(), window_seconds=3600)
    await old._check_lead()
    await store.add_batch(_batch(2))
    await old.close_window()  # and dies before anchoring it: one open job
    lead = Lead(store, leading=False)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.02
    real, fails = store.open_anchor_jobs, 1

    async def flaky() -> Any:
        nonlocal fails
        if fails:
            fails -= 1
            raise StoreError("redis: timeout reading the open jobs")
        return await real()

    lead.open_anchor_jobs = flaky
    async with running(agg, store):
        lead.leading = True
        await _until(lambda: len(rec.roots) == 1)
        assert fails == 0 and agg.leading
        assert lead.resigned == 1, "the lease was handed over while the jobs could not be read"


async def test_a_cut_window_after_the_lead_lapsed_is_not_committed(tmp_path: Path) -> None:
    """A backlog cut into two windows; the lead lapses after the first commit: the second is not built, let
    alone committed without a term (found by a second review)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 5.0
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600, max_leaves=1)
    await agg._check_lead()
    for _ in range(MAX_TREES_PER_WINDOW + 1):  # one leaf a tree: one window of the most trees, then the rest
        await store.add_batch(_batch(1))
    real = store.commit_window
    terms: list[int | None] = []

    async def commit(*args: Any, term: int | None = None) -> None:
        terms.append(term)
        await real(*args, term=term)
        agg._lead_until = 0.0  # the lease checks failed meanwhile: the lead lapses
        agg._lapse_if_unconfirmed()

    lead.commit_window = commit
    try:
        with pytest.raises(LeaseLostError, match="does not lead now"):
            await agg.close_window()
        assert terms == [1] and (await store.stats()).backlog == 1
    finally:
        await store.close()


async def test_a_new_term_while_subject_heads_are_built(tmp_path: Path) -> None:
    """The lease task lands a new term while a window's subject heads are built: the window is still built
    from one set of heads (a second review found a TypeError there)."""
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    await agg._check_lead()
    sent = [_batch(1, A)]
    await store.add_batch(sent[0])
    real = store.subject_frontier

    async def frontier(*args: Any, **kw: Any) -> Any:
        if lead.term == 1:
            lead.term = 2
            await agg._check_lead()
        return await real(*args, **kw)

    lead.subject_frontier = frontier
    try:
        await agg.close_window()
        (tree,) = [t for t, _ in await store.open_anchor_jobs()]
        assert tree.heads_root == _heads_of(sent).root and agg._term == 2
    finally:
        await agg.drain(1)
        await store.close()


async def test_a_lead_confirmed_late_in_the_same_term_resumes_what_its_workers_dropped(tmp_path: Path) -> None:
    """A renewal answered after the lease it asked for (same fencing token): meanwhile the worker stopped
    retrying its tree. The lapse ends the term, so the late answer begins a new one, which queues the open
    job again (found by a third review: it stayed open for as long as the instance led)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    delay = 0.0

    async def renew() -> int | None:
        await asyncio.sleep(delay)
        return lead.term if lead.leading else None

    lead.lead = renew
    target = FlakyTarget(failures=10**6)
    agg = Aggregator(lead.as_store(), [target], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    agg.lease_check_seconds = 0.1
    async with running(agg, store):
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: target.calls >= 2)  # the worker retries its tree
        delay = 0.45  # the next renewals answer after the lease they asked for
        await asyncio.sleep(0.6)
        target.failures, delay = 0, 0.0  # the target recovers, the store answers in time again
        await _eventually(lambda: _no_open_job(store), 10)


async def test_a_drain_keeps_the_lead_until_its_work_is_anchored(tmp_path: Path) -> None:
    """Anchoring the last trees takes longer than the lease: the lead is renewed while draining (found by a
    third review: workers dropped the rest once the lease passed, and the drain said all was anchored)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 1.0
    rec = Slow(0.1)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, max_leaves=1)
    agg.lease_check_seconds = 0.05
    await agg.start()
    try:
        for _ in range(15):
            await store.add_batch(_batch(1))
        assert await agg.drain(20)  # closes the window of 15 one-leaf trees, anchors them one after another
        assert len(rec.roots) == 15 and await store.open_anchor_jobs() == []
        assert lead.resigned == 1
    finally:
        await store.close()


async def test_a_window_built_across_a_lapse_and_a_new_term_on_the_same_token_is_built_again(
    tmp_path: Path,
) -> None:
    """The lead lapses while a window is built and the next renewal answers the same token: a new term of
    this instance, whose read of the open jobs comes before the window's commit. The window is refused and
    built again, so it is queued and anchored (found by a fourth review: it was committed unqueued)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 5.0
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 3600
    real, lapses = store.backlog, 0

    async def backlog(*args: Any, **kw: Any) -> Any:
        nonlocal lapses
        if not lapses:
            lapses += 1
            agg._lead_until = 0.0
            agg._lapse_if_unconfirmed()
            await agg._check_lead()  # renewed with the same token: a new term
        return await real(*args, **kw)

    lead.backlog = backlog
    async with running(agg, store):
        await store.add_batch(_batch(2))
        with pytest.raises(LeaseLostError, match="the lead changed while the window was built"):
            await agg.close_window()
        assert agg.leading and lapses == 1
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)


async def test_a_drain_that_begins_lapsed_takes_its_lead_again_and_finishes(tmp_path: Path) -> None:
    """The lead had lapsed when the drain began, and its worker dropped the queued tree: the drain renews
    the lead (a new term reads the open job again) and anchors it before it says it is done (found by a
    fourth review: it said done with the job open, and kept the lease)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    rec = Recorder(bug=10**6)  # fails until told otherwise
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    agg.lease_check_seconds = 0.05
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        await agg.close_window()
        lead.down = True
        await _until(lambda: not agg.leading and not agg._sending["rec-1"])  # lapsed; the tree dropped
        rec.bug = 0
        drained = asyncio.create_task(agg.drain(10))
        await asyncio.sleep(0.2)  # the drain began lapsed
        lead.down = False
        assert await drained
        assert len(rec.roots) == 1 and await store.open_anchor_jobs() == [] and lead.resigned == 1
    finally:
        await store.close()


async def test_a_commit_whose_answer_is_lost_is_queued_at_the_next_check(tmp_path: Path) -> None:
    """The commit landed but its answer failed (a lost reply, replicas late): its batches are past the
    watermark, so no later window holds them. The next lease check queues the open jobs again, this
    window's too (found by a fifth review: it stayed open while the instance led on)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.05
    LostAnswer(lead, store, "only 0 of 1 Redis replicas confirmed the write in time")
    async with running(agg, store):
        await store.add_batch(_batch(2))
        with pytest.raises(StoreError, match="replicas"):
            await agg.close_window()
        assert (await store.stats()).backlog == 0 and agg.leading  # committed all the same; still leading
        await _until(lambda: len(rec.roots) == 1)


async def test_a_drain_that_runs_out_of_time_hands_the_lead_over_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A target that keeps failing: the drain ends at its deadline, says what is left, and hands the lead
    over so the next leader need not wait out the lease (found by a fifth review)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder(bug=10**6)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        assert not await agg.drain(0.5)
        assert lead.resigned == 1 and not agg.leading
        assert "drain: 1 anchor(s) being sent, 0 job(s) open; the next leader resumes them" in caplog.text
    finally:
        await store.close()


async def test_a_commit_that_keeps_failing_is_said_once_and_the_lead_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses every commit (a full disk): one line when it starts, no term ends, no
    flapping of the lead (a sixth review saw a new term and a warning per failure)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    calls = 0

    async def full(*args: Any, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        raise StoreError("database or disk is full")

    lead.commit_window = full
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=0.05)
    agg.lease_check_seconds = 0.05
    caplog.set_level(logging.INFO, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: calls >= 10)
        assert agg.leading and agg._epoch == 1
    assert caplog.text.count("window not closed") == 1, caplog.text
    assert "taken again" not in caplog.text


async def test_a_drain_whose_last_commit_fails_to_answer_finishes_its_work(tmp_path: Path) -> None:
    """The drain's last window commits but its answer fails: the drain goes on (the window is found
    committed, its anchors queued at the next check) and hands the lead over (a sixth review: it stopped at
    once, with the job open and the lease kept)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.05
    lost = LostAnswer(lead, store, "the reply was lost")
    await agg.start()
    try:
        await store.add_batch(_batch(2))
        assert await agg.drain(10)
        assert lost.count == 1 and len(rec.roots) == 1 and await store.open_anchor_jobs() == []
        assert lead.resigned == 1
    finally:
        await store.close()


async def test_a_drain_that_begins_lapsed_closes_the_last_window_too(tmp_path: Path) -> None:
    """Hashes wait in the backlog and the lead had lapsed when the drain began: once the lead is taken
    again the drain closes the window and anchors it (a sixth review: it anchored the open jobs only)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.05
    await agg.start()
    try:
        lead.down = True
        await _until(lambda: not agg.leading)
        await store.add_batch(_batch(3))
        drained = asyncio.create_task(agg.drain(10))
        await asyncio.sleep(0.2)
        lead.down = False
        assert await drained
        assert (await store.stats()).backlog == 0 and len(rec.roots) == 1 and rec.roots[0].tree_size == 3
    finally:
        await store.close()


async def test_a_slow_failing_commit_does_not_hold_the_renewals_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Commits that take twice the lease and then fail: the renewals go on meanwhile (the open jobs are
    queued again at a check when no commit is under way), so the lead never lapses (a seventh review saw
    the renewal wait behind the commit and the lead lapse)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    calls = 0

    async def slow(*args: Any, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.6)
        raise StoreError("replicas late")

    lead.commit_window = slow
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=0.05)
    agg.lease_check_seconds = 0.05
    caplog.set_level(logging.WARNING, logger="receipt_service.windows")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: calls >= 3)
        assert agg.leading and agg._epoch == 1
    assert "has not confirmed the lead" not in caplog.text


async def test_a_drain_whose_lead_moves_away_before_its_last_window_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last window cannot be closed and the lead moves to another instance: the drain leaves it to
    that instance and says it did not close it (a seventh review: it said every window was closed)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.lease_check_seconds = 0.05
    await agg.start()

    async def broken(limit: int, upto: int | None = None) -> list[Any]:
        lead.leading = False  # meanwhile another instance took the lease
        raise StoreError("disk on fire")

    lead.backlog = broken
    caplog.set_level(logging.INFO, logger="receipt_service.windows")
    try:
        assert not await agg.drain(5)
        assert "draining, the lead moved to another instance, which resumes open anchors" in caplog.text
    finally:
        await store.close()
