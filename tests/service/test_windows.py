"""The aggregator: windows cut into trees, anchors sent and retried, drains and retention, on real stores."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from receipt_service.anchors import iso_now
from receipt_service.anchors.local import LocalLedgerBackend
from receipt_service.errors import CorruptRecordError, StoreError
from receipt_service.ledger import TreeRoot
from receipt_service.metrics import Metrics
from receipt_service.stores.base import Batch
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.trees import pack_tree
from receipt_service.windows import MAX_TREES_PER_WINDOW, Aggregator, tree_records
from receipt_verifier.hashing import bound_commitment
from receipt_verifier.logs import log_root
from receipt_verifier.merkle import MerkleTree
from receipt_verifier.model import Anchor, Binding

from .aggregation import (
    DOMAIN,
    A,
    B,
    FlakyTarget,
    Gated,
    Lead,
    Recorder,
    _batch,
    _eventually,
    _heads_of,
    _leaves,
    _until,
    running,
)


async def test_a_failing_target_is_retried_and_every_failure_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    target = FlakyTarget(failures=2)
    metrics = Metrics()
    agg = Aggregator(store, [target], metrics, window_seconds=3600, retry_max_seconds=0.05)
    async with running(agg, store, check=False):
        await store.add_batch(Batch("t", 1, os.urandom(16), os.urandom(32), os.urandom(16)))
        caplog.set_level(logging.WARNING, logger="receipt_service")
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
        await _until(lambda: len(rec.roots) == 1 and len(local.ledger) == 1)  # each target anchors on its own
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
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store):
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)
        assert "anchor backend rec-1 raised" in caplog.text and "KeyError" in caplog.text
        assert "failed, retrying in 0.05s: KeyError: 'a bug in the backend'" in caplog.text
        assert "failed, retrying in 0.01s" in caplog.text  # the backoff is capped
        assert 'receipt_anchor_failures_total{target="rec-1"} 2.0' in metrics.render().decode()


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
    caplog.set_level(logging.WARNING, logger="receipt_service")
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
    again.leadership.check_seconds = 0.02
    caplog.set_level(logging.WARNING, logger="receipt_service")
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
    caplog.set_level(logging.WARNING, logger="receipt_service")
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
    caplog.set_level(logging.WARNING, logger="receipt_service")
    try:
        assert not await agg.drain(0.5)  # tried again while the grace lasts, said once
        assert (
            caplog.text.count("drain: the last window is not closed yet (tried again while it may): disk on fire") == 1
        )
        assert "drain: the last window is not closed, 0 anchor(s) being sent, 0 job(s) open" in caplog.text
        assert lead.resigned == 1  # handed over: the next leader closes it
    finally:
        await store.close()


class _Bug(BaseException):
    """What no write job should raise: it stops the SQLite writer thread."""


async def test_a_drain_whose_store_stopped_says_so_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    await agg.start()
    await store.add_batch(_batch(3))  # acknowledged: committed, in the open window

    def bug(conn: Any) -> None:
        raise _Bug("a bug in a write job")

    with pytest.raises(StoreError, match="writer stopped after an unexpected error"):
        await store.writer.write(bug)
    caplog.set_level(logging.WARNING, logger="receipt_service")
    try:
        # no retry until the grace ends (600 s here): nothing can close the window before a restart
        assert not await asyncio.wait_for(agg.drain(600), 60)
        assert "drain stopped early: the database writer stopped after an unexpected error (_Bug: a bug" in caplog.text
        assert "tried again while it may" not in caplog.text
        assert lead.resigned == 1 and rec.roots == []
    finally:
        await store.close()
    store = SQLiteStore(tmp_path)  # the restart: the three hashes are there, and are anchored
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    await agg.start()
    try:
        assert await agg.drain(30)
        assert sum(r.tree_size for r in rec.roots) == 3
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
    caplog.set_level(logging.INFO, logger="receipt_service")
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
    caplog.set_level(logging.WARNING, logger="receipt_service")
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
