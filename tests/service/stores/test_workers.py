"""Worker processes sharing a data directory's SQLite files (``serve --workers``): one seq order, a clock
sequence each, one leader, the floor of a seal, and long polls woken by the others' commits.

Each worker here is a store opened on the same files with its own connections, writer thread and
locks: ``flock`` locks belong to open files, so two of them in one process exclude each other as two
processes do (``tests/service/test_workers.py`` runs real processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from receipt_service.errors import StoreError, TicksTakenError
from receipt_service.ids import ProofIdIssuer, ceil_us
from receipt_service.stores.base import Batch, TreeRecord
from receipt_service.stores.sqlite import DB_FILE, KEEP_CHANGES, MAX_SEQ, SQLiteStore, open_domain_stores
from receipt_service.stores.workers import ServeLock, leader_pid, reserve_clocks
from receipt_service.trees import build_packed
from receipt_service.windows import tree_records

NOW_NS = 1_763_712_000_000_000_000
Workers = Callable[[int], list[SQLiteStore]]


def _batch(issuer: ProofIdIssuer, n: int, unix_ns: int = NOW_NS) -> Batch:
    hashes = [os.urandom(32) for _ in range(n)]
    issued = issuer.issue_batch(hashes, unix_ns)
    return Batch("t", issued.first_ticks, issued.proof_id_bytes, b"".join(hashes), os.urandom(16 * n))


def _keys(b: Batch, clock: int) -> list[tuple[int, int]]:
    return [(clock, b.first_ticks + i) for i in range(b.count)]


async def _window(store: SQLiteStore, window: str = "w-1") -> list[TreeRecord]:
    spans = await store.backlog(10_000)
    trees = tree_records(
        window,
        spans[0].first_seq,
        build_packed([s.columns(None) for s in spans], 8),
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:01Z",
    )
    await store.commit_window(trees, ["local"])
    return trees


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    """``workers(n)``: n stores on one file, as ``serve --workers n`` opens them."""
    opened: list[SQLiteStore] = []

    def make(n: int) -> list[SQLiteStore]:
        first = SQLiteStore(tmp_path)
        reserve_clocks([first], n)
        first.close_sync()
        group = [SQLiteStore(tmp_path, worker=k) for k in range(n)]
        opened.extend(group)
        return group

    yield make
    for store in opened:
        await store.close()


async def test_workers_share_one_seq_order_and_find_each_others_submissions(workers: Workers) -> None:
    a, b = workers(2)
    assert a.clock_seq != b.clock_seq
    ia, ib = ProofIdIssuer(a.clock_seq, a.last_ticks()), ProofIdIssuer(b.clock_seq, b.last_ticks())
    batches = [(a, _batch(ia, 3)) if i % 2 else (b, _batch(ib, 2)) for i in range(60)]
    firsts = await asyncio.gather(*(s.add_batch(x) for s, x in batches))
    spans = sorted((f, f + x.count - 1) for f, (_, x) in zip(firsts, batches, strict=True))
    assert spans[0][0] == 1 and all(q[0] == p[1] + 1 for p, q in itertools.pairwise(spans))
    assert (await a.stats()).submissions == (await b.stats()).submissions == 150
    # the same receive ticks on both clocks are two submissions, each found by its own proof id
    assert batches[0][1].first_ticks == batches[1][1].first_ticks
    for reader in (a, b):
        for (store, x), first in zip(batches, firsts, strict=True):
            found = await reader.get_submissions(_keys(x, store.clock_seq))
            assert [r.seq for r in found.values()] == list(range(first, first + x.count))
            assert b"".join(r.proof_id for r in found.values()) == x.proof_ids


async def test_one_worker_leads_until_it_closes(workers: Workers, tmp_path: Path) -> None:
    a, b = workers(2)
    assert leader_pid(tmp_path) is None
    assert await a.lead() and await a.lead()
    assert not await b.lead()
    assert leader_pid(tmp_path) == os.getpid()
    await a.close()
    assert await b.lead()


async def test_a_seal_by_the_leader_refuses_another_workers_straggler(workers: Workers) -> None:
    a, b = workers(2)
    ia, ib = ProofIdIssuer(a.clock_seq, 0), ProofIdIssuer(b.clock_seq, 0)
    early = _batch(ib, 2)
    straggler = _batch(ib, 1)  # issued by b before the seal, stored after it
    await b.add_batch(early)
    late_on_a = _batch(ia, 1, NOW_NS + 5_000)  # a's newest receive time is later than b's
    await a.add_batch(late_on_a)
    last, floor = await a.seal(0)
    assert (last, floor) == (3, ceil_us(late_on_a.first_ticks))  # past every worker's receive times
    with pytest.raises(TicksTakenError) as err:
        await b.add_batch(straggler)
    assert err.value.last_ticks == floor - 1
    ib.resume_after(err.value.last_ticks)
    assert await b.add_batch(_batch(ib, 1)) == 4


async def test_a_worker_is_woken_by_the_leaders_commits_and_anchors(workers: Workers) -> None:
    a, b = workers(2)
    b.watch_seconds = 0.01
    woken: list[tuple[int, int]] = []
    watching = asyncio.create_task(b.watch(lambda first, last: woken.append((first, last))))
    try:
        await asyncio.sleep(0.05)  # changes before the watch began are not replayed
        await b.add_batch(_batch(ProofIdIssuer(b.clock_seq, 0), 20))
        trees = await _window(a)
        await a.record_anchor(trees[0], "local", "{}", 1)
        for _ in range(100):
            if len(woken) >= 2:
                break
            await asyncio.sleep(0.01)
        assert woken == [(1, 20), (trees[0].first_seq, trees[0].last_seq)]
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_a_watch_started_again_passes_on_what_changed_while_it_was_down(workers: Workers) -> None:
    """The aggregator starts the watch again after an error: a long poll must still wake for a window
    committed in between."""
    a, b = workers(2)
    b.watch_seconds = 0.01
    woken: list[tuple[int, int]] = []

    async def watch_for(seconds: float) -> None:
        task = asyncio.create_task(b.watch(lambda first, last: woken.append((first, last))))
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    await watch_for(0.03)
    await b.add_batch(_batch(ProofIdIssuer(b.clock_seq, 0), 5))
    trees = await _window(a)  # committed while b's watch is down
    await watch_for(0.05)
    assert woken == [(1, 5)] and trees[0].last_seq == 5


async def test_a_clock_reserved_after_a_worker_started_is_still_found(workers: Workers, tmp_path: Path) -> None:
    a, b = workers(2)
    admin = SQLiteStore(tmp_path)
    reserve_clocks([admin], 3)  # a supervisor started later with three workers
    admin.close_sync()
    c = SQLiteStore(tmp_path, worker=2)
    try:
        x = _batch(ProofIdIssuer(c.clock_seq, 0), 1)
        await c.add_batch(x)
        assert await a.has_clock(c.clock_seq)
        assert next(iter((await a.get_submissions(_keys(x, c.clock_seq))).values())).hash == x.hashes
        assert not await a.has_clock(
            next(cs for cs in range(1 << 14) if cs not in {a.clock_seq, b.clock_seq, c.clock_seq})
        )
    finally:
        await c.close()


def test_clocks_are_distinct_across_lanes_and_workers_and_kept(tmp_path: Path) -> None:
    main = SQLiteStore(tmp_path)
    lanes = [main, *open_domain_stores(tmp_path, main, ["a", "b"]).values()]
    try:
        reserve_clocks(lanes, 4)
        first = [s.lane_clocks() for s in lanes]
        clocks = [cs for c in first for cs in c.values()]
        assert len(clocks) == 12 == len(set(clocks))
        reserve_clocks(lanes, 2)  # fewer workers later: the reservations stay
        assert [s.lane_clocks() for s in lanes] == first
    finally:
        for s in lanes:
            s.close_sync()
    with pytest.raises(StoreError, match="no clock sequence is reserved for worker 4; start workers with"):
        SQLiteStore(tmp_path, worker=4)


async def test_a_database_from_before_workers_keeps_its_receipts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    x = _batch(ProofIdIssuer(store.clock_seq, 0), 4)
    await store.add_batch(x)
    clock = store.clock_seq
    await store.close()
    conn = sqlite3.connect(tmp_path / DB_FILE)  # the schema of the release before: no clock column
    conn.executescript(
        "DROP INDEX batches_clock_ticks; ALTER TABLE batches DROP COLUMN clock;"
        " CREATE UNIQUE INDEX batches_ticks ON batches(first_ticks);"
    )
    conn.close()
    again = SQLiteStore(tmp_path)
    try:
        assert [r.seq for r in (await again.get_submissions(_keys(x, clock))).values()] == [1, 2, 3, 4]
        assert again.last_ticks() == x.first_ticks + 3
        with sqlite3.connect(tmp_path / DB_FILE) as check:
            names = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "batches_clock_ticks" in names and "batches_ticks" not in names
    finally:
        await again.close()


def test_one_service_per_data_directory(tmp_path: Path) -> None:
    first = ServeLock(tmp_path)
    first.take()
    with pytest.raises(StoreError, match=rf"another receipt-service \(pid {os.getpid()}\) serves the data directory"):
        ServeLock(tmp_path).take()
    first.release()
    again = ServeLock(tmp_path)
    again.take()
    again.release()


def test_a_new_lane_file_avoids_every_clock_reserved_in_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clock sequences are drawn at random; here the smallest free one is drawn, so a new lane would take
    a reserved worker clock of another lane if it only avoided the other lanes' own clocks."""
    monkeypatch.setattr("secrets.choice", min)
    main = SQLiteStore(tmp_path)
    lanes = open_domain_stores(tmp_path, main, ["a"])
    reserve_clocks([main, *lanes.values()], 8)
    for s in (main, *lanes.values()):
        s.close_sync()
    main = SQLiteStore(tmp_path)
    lanes = open_domain_stores(tmp_path, main, ["a", "b"])  # b is a new domain
    try:
        clocks = [cs for s in (main, *lanes.values()) for cs in s.lane_clocks().values()]
        assert len(clocks) == 17 == len(set(clocks)), clocks
        assert list(lanes) == ["a", "b"]
    finally:
        for s in (main, *lanes.values()):
            s.close_sync()


def test_a_clock_held_by_two_lanes_is_refused_by_name(tmp_path: Path) -> None:
    main = SQLiteStore(tmp_path)
    lane = open_domain_stores(tmp_path, main, ["a"])["a"]
    lane.reserve_clock(1, main.clock_seq)  # damaged: lane a's worker 1 would issue main's proof ids
    lane.close_sync()
    with pytest.raises(StoreError, match=rf"clock sequence\(s\) \[{main.clock_seq}\] belong to another lane too"):
        open_domain_stores(tmp_path, main, ["a"])
    main.close_sync()


@pytest.mark.parametrize("count", [1, 2], ids=["one-process", "two-workers"])
async def test_the_wal_starts_again_under_steady_writes(workers: Workers, tmp_path: Path, count: int) -> None:
    """Each commit appends at least a page to the WAL; unless the WAL starts again from its beginning, its
    file holds every commit. Under steady commits (of one process, or two workers) it stays far smaller."""
    stores = workers(2) if count == 2 else [SQLiteStore(tmp_path)]
    for s in stores:
        s.writer.checkpoint_seconds = 0.05
    issuers = {s: ProofIdIssuer(s.clock_seq, s.last_ticks()) for s in stores}
    wal = stores[0].path.with_name(DB_FILE + "-wal")
    page = stores[0]._r.execute("PRAGMA page_size").fetchone()[0]
    largest, loop = 0, asyncio.get_running_loop()
    end = loop.time() + 1.5

    async def write(s: SQLiteStore) -> None:
        while loop.time() < end:
            await s.add_batch(_batch(issuers[s], 20))

    async def watch() -> None:
        nonlocal largest
        while loop.time() < end:
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(write(s) for s in stores for _ in range(8 // count)), watch())
        commits = sum(s.writer.commits for s in stores)
        assert commits > 200 and all(s.writer.checkpoints > 2 for s in stores)
        # A WAL that never starts again holds at least a page per commit (before: 60 MB after 2,680 commits,
        # over five pages each). Its file keeps its largest size, set by the most commits between two
        # checkpoints: half a page per commit leaves room for a slow machine's stalls (a quarter did not).
        assert largest < commits * page / 2, (largest, commits)
    finally:
        if count == 1:
            await stores[0].close()


async def test_a_checkpoint_a_reader_holds_back_is_counted_apart_and_tried_again(tmp_path: Path) -> None:
    """A read transaction from outside (a backup, a sqlite3 shell) keeps the frames its snapshot needs: the
    PASSIVE checkpoint copies what it can and counts as incomplete; once the reader ends, one completes."""
    store = SQLiteStore(tmp_path)
    store.writer.checkpoint_seconds = 0.05
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    reader = sqlite3.connect(store.path, isolation_level=None)
    try:
        await store.add_batch(_batch(issuer, 1))
        await _until(lambda: store.writer.checkpoints >= 1)
        done = store.writer.checkpoints
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM batches").fetchone()  # its snapshot: the WAL as it stands
        await store.add_batch(_batch(issuer, 1))
        await _until(lambda: store.writer.checkpoints_incomplete >= 2)
        assert store.writer.checkpoints == done, "a checkpoint the reader held back is not counted as done"
        reader.execute("COMMIT")
        await _until(lambda: store.writer.checkpoints > done)
    finally:
        reader.close()
        await store.close()


async def _until(check: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_watch_that_fell_behind_the_kept_changes_wakes_every_poll(workers: Workers) -> None:
    a, b = workers(2)
    woken: list[tuple[int, int]] = []
    task = asyncio.create_task(b.watch(lambda first, last: woken.append((first, last))))
    await asyncio.sleep(0.1)  # the watch has read where the changes stand
    many = KEEP_CHANGES + 2_000  # more changes than are kept before the watch looks again: the first are pruned

    def note(conn: sqlite3.Connection) -> None:
        for seq in range(1, many + 1):
            a._note_change(conn, seq, seq)

    await a._write(note)
    for _ in range(100):
        if woken:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert woken[0] == (1, MAX_SEQ), "the pruned changes are not skipped: every waiter rechecks"
    assert woken[1:] == [(seq, seq) for seq in range(many - len(woken) + 2, many + 1)]


async def test_a_checkpoint_that_fails_leaves_the_writer_running(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer lock can fail (ENOLCK on a network file system): the checkpoint is tried again later,
    and the writer thread goes on committing."""
    a, _ = workers(2)
    a.writer.checkpoint_seconds = 0.05
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    lock = a.writer.lock
    assert lock is not None
    held, failures = lock.held, []

    def flaky() -> contextlib.AbstractContextManager[None]:
        if not failures:  # the first take after the first commit: the checkpoint's
            failures.append(1)
            raise OSError(errno.ENOLCK, "no locks available")
        return held()

    await a.add_batch(_batch(issuer, 1))
    monkeypatch.setattr(lock, "held", flaky)
    await asyncio.sleep(0.2)  # the checkpoint came due and failed
    assert failures and a.writer.thread.is_alive()
    await asyncio.wait_for(a.add_batch(_batch(issuer, 1)), 5)
    for _ in range(50):
        if a.writer.checkpoints:
            break
        await asyncio.sleep(0.05)
    assert a.writer.checkpoints >= 1, "tried again, and it worked"


async def test_writes_that_queue_while_another_worker_commits_join_one_commit(workers: Workers, tmp_path: Path) -> None:
    """A worker takes its queue once it holds the writer lock: what came while it waited for the lock
    goes into that one commit (group commit), not one commit for the first write and one for the rest."""
    a, _ = workers(2)
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    commits, jobs = a.writer.commits, a.writer.jobs
    fd = os.open(tmp_path / (DB_FILE + "-writer.lock"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another worker's commit, in progress
        pending = [asyncio.ensure_future(a.add_batch(_batch(issuer, 1)))]
        await asyncio.sleep(0.1)  # the writer thread waits for the lock, the queue untaken
        pending += [asyncio.ensure_future(a.add_batch(_batch(issuer, 1))) for _ in range(19)]
        await asyncio.sleep(0.1)
        assert not any(p.done() for p in pending), "nothing is acknowledged before it is committed"
        fcntl.flock(fd, fcntl.LOCK_UN)
        firsts = await asyncio.wait_for(asyncio.gather(*pending), 5)
    finally:
        os.close(fd)
    assert sorted(firsts) == list(range(firsts[0], firsts[0] + 20))
    assert (a.writer.commits - commits, a.writer.jobs - jobs) == (1, 20)


async def test_a_writer_lock_that_fails_fails_the_write_by_name_and_the_writer_goes_on(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = workers(2)
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    lock = a.writer.lock
    assert lock is not None
    held = lock.held

    def failing() -> contextlib.AbstractContextManager[None]:
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(lock, "held", failing)
    with pytest.raises(StoreError, match=r"writer lock: .*no locks available"):
        await asyncio.wait_for(a.add_batch(_batch(issuer, 1)), 5)
    monkeypatch.setattr(lock, "held", held)
    assert a.writer.thread.is_alive()
    x = _batch(issuer, 1)
    first = await asyncio.wait_for(a.add_batch(x), 5)
    assert [r.seq for r in (await a.get_submissions(_keys(x, a.clock_seq))).values()] == [first]
