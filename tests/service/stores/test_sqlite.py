"""The SQLite store: durable group commit, consecutive seqs, windows as ranges, checks on read."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from receipt_service.errors import CorruptRecordError, StoreError
from receipt_service.ids import ProofIdIssuer
from receipt_service.stores.base import Batch, StoredBatch, TreeRecord
from receipt_service.stores.sqlite import DB_FILE, SQLiteStore
from receipt_service.stores.workers import WriterLock
from receipt_service.trees import build_packed
from receipt_service.windows import tree_records
from receipt_verifier.proof_id import parse_proof_id


def _batch(issuer: ProofIdIssuer, n: int, tenant: str = "t") -> Batch:
    hashes = [os.urandom(32) for _ in range(n)]
    issued = issuer.issue_batch(hashes, 1_763_712_000_000_000_000)
    return Batch(tenant, issued.first_ticks, issued.proof_id_bytes, b"".join(hashes), os.urandom(16 * n))


def _trees(spans: list[StoredBatch], max_leaves: int) -> list[TreeRecord]:
    packed = build_packed([s.columns(None) for s in spans], max_leaves)
    return tree_records("w-1", spans[0].first_seq, packed, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")


def _ticks(b: Batch) -> list[tuple[int, int]]:
    clock = parse_proof_id(_uuid(b.proof_ids[:16])).clock_seq
    return [(clock, b.first_ticks + i) for i in range(b.count)]


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


async def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        firsts = await asyncio.gather(*(store.add_batch(_batch(issuer, 3)) for _ in range(200)))
        assert sorted(firsts) == list(range(1, 601, 3))  # consecutive, no gaps, no overlaps
        assert store.writer.jobs == 200
        assert store.writer.commits < store.writer.jobs  # group commit: fewer fsyncs than requests
        assert (await store.stats()).submissions == 600
    finally:
        await store.close()


async def test_rows_survive_reopen_and_ids_resume(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    batch = _batch(issuer, 5)
    await store.add_batch(batch)
    clock_seq, instance = store.clock_seq, store.instance_id
    await store.close()
    again = SQLiteStore(tmp_path)
    try:
        assert (again.clock_seq, again.instance_id) == (clock_seq, instance)
        assert again.last_ticks() == _ticks(batch)[-1][1]
        rows = await again.get_submissions(_ticks(batch))
        assert b"".join(rows[t].hash for t in _ticks(batch)) == batch.hashes
        assert [rows[t].seq for t in _ticks(batch)] == [1, 2, 3, 4, 5]
        assert await again.add_batch(_batch(ProofIdIssuer(clock_seq, again.last_ticks()), 1)) == 6
    finally:
        await again.close()


async def test_windows_move_the_watermark_and_reject_a_second_aggregator(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        await store.add_batch(_batch(issuer, 4))
        await store.add_batch(_batch(issuer, 3))
        spans = await store.backlog(100)
        assert [(s.first_seq, s.last_seq) for s in spans] == [(1, 4), (5, 7)]
        built = _trees(spans, 3)
        assert [b.size for b in built] == [3, 3, 1]
        await store.commit_window(built, ["local-x"])
        assert await store.backlog(100) == []
        with pytest.raises(StoreError, match="watermark"):
            await store.commit_window(built[:1], ["local-x"])
        tree = await store.tree_for_seq(5)
        assert tree is not None and (tree.tree_index, tree.first_seq, tree.last_seq) == (1, 4, 6)
        assert len(await store.open_anchor_jobs()) == 3
        await store.record_anchor(tree, "local-x", "{}", 1)
        assert len(await store.open_anchor_jobs()) == 2
        await store.add_batch(_batch(issuer, 1))
        assert await store.tree_for_seq(8) is None  # pending: not in any tree yet
        assert [(s.first_seq, s.last_seq) for s in await store.backlog(100)] == [(8, 8)]
    finally:
        await store.close()


async def test_purge_drops_only_fully_anchored_old_trees(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        batch = _batch(issuer, 4)  # one row that two trees share
        await store.add_batch(batch)
        built = _trees(await store.backlog(10), 2)
        await store.commit_window(built, ["local-x"])
        first: TreeRecord = built[0]
        await store.record_anchor(first, "local-x", "{}", 1)
        assert await store.purge(0) == 0  # nothing is older than the epoch
        assert await store.purge(2**62) == 2  # the anchored tree goes; the open one stays
        assert await store.purge(2**62) == 0
        assert await store.tree_for_seq(1) is None and await store.tree_for_seq(3) is not None
        found = await store.get_submissions(_ticks(batch))
        assert sorted(r.seq for r in found.values()) == [3, 4]  # purged ones are gone, the rest still served
        assert (await store.stats()).submissions == 2
    finally:
        await store.close()


@pytest.mark.parametrize("column", ["hashes", "nonces", "proof_ids", "tenant", "first_ticks", "count"])
async def test_a_damaged_row_is_refused(tmp_path: Path, column: str) -> None:
    store = SQLiteStore(tmp_path)
    try:
        batch = _batch(ProofIdIssuer(store.clock_seq), 3)
        await store.add_batch(batch)
        conn = sqlite3.connect(tmp_path / DB_FILE)
        with conn:
            if column in ("first_ticks", "count"):
                conn.execute(f"UPDATE batches SET {column} = {column} - 1")
            elif column == "tenant":
                conn.execute("UPDATE batches SET tenant = 'other'")
            else:
                conn.execute(f"UPDATE batches SET {column} = zeroblob(length({column}))")
        conn.close()
        with pytest.raises(CorruptRecordError, match="integrity check"):
            await store.get_submissions(_ticks(batch))
        with pytest.raises(CorruptRecordError):
            await store.backlog(10)
    finally:
        await store.close()


async def test_a_failing_write_fails_only_its_own_request(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        good = _batch(issuer, 2)
        dup = Batch("t", good.first_ticks, good.proof_ids[:16], good.hashes[:32], good.nonces[:16])  # same ticks

        async def first_then_dup() -> None:
            await store.add_batch(good)
            await store.add_batch(dup)

        results = await asyncio.gather(
            first_then_dup(), *(store.add_batch(_batch(issuer, 1)) for _ in range(5)), return_exceptions=True
        )
        assert isinstance(results[0], StoreError)
        assert all(isinstance(r, int) for r in results[1:])
        assert (await store.stats()).submissions == 7
        spans = await store.backlog(100)
        assert spans[0].first_seq == 1
        assert sum(s.batch.count for s in spans) == 7 and spans[-1].last_seq == 7  # still consecutive
    finally:
        await store.close()


def test_an_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        SQLiteStore(tmp_path)


async def _stored(data_dir: Path) -> int:
    """Submissions in the database, opened again."""
    again = SQLiteStore(data_dir)
    try:
        return (await again.stats()).submissions
    finally:
        await again.close()


class _Bug(BaseException):
    """Not the database's error, nor even an ``Exception``: what no write job should raise."""


async def test_a_bug_in_a_write_stops_the_writer_and_nothing_waits_forever(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        await store.add_batch(_batch(issuer, 4))  # committed before the bug

        def bug(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM batches")  # inside the transaction the bug rolls back
            raise _Bug("a job that should never raise this")

        results = await asyncio.wait_for(
            asyncio.gather(
                store.writer.write(bug), *(store.add_batch(_batch(issuer, 1)) for _ in range(3)), return_exceptions=True
            ),
            10,
        )
        assert isinstance(results[0], StoreError) and "_Bug: a job that should never raise this" in str(results[0])
        for r in results[1:]:  # committed before the bug, or failed with it: never left waiting
            assert isinstance(r, int) or (isinstance(r, StoreError) and "restart the service" in str(r))
        committed = 4 + sum(isinstance(r, int) for r in results[1:])
        with pytest.raises(StoreError, match="writer stopped after an unexpected error") as first:
            await asyncio.wait_for(store.add_batch(_batch(issuer, 1)), 10)
        with pytest.raises(StoreError, match="writer stopped after an unexpected error") as second:
            await asyncio.wait_for(store.add_batch(_batch(issuer, 1)), 10)
        assert first.value is not second.value  # one instance raised again and again would grow its traceback
        with pytest.raises(StoreError, match="_Bug"):
            await store.ping()  # the health check says why
    finally:
        await store.close()
    assert await _stored(tmp_path) == committed  # the rolled-back delete took nothing with it


class _Unsayable(_Bug):
    """A bug whose message cannot even be read."""

    def __str__(self) -> str:
        raise _Bug("its __str__ is broken too, and not even with an Exception")


async def test_a_bug_that_cannot_say_what_it_is_still_stops_the_writer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:

        def bug(conn: sqlite3.Connection) -> None:
            raise _Unsayable()

        results = await _one_batch(store, _insert_meta("rolled-back"), bug)
        for r in results:  # answered, not left waiting, and named by the bug's type
            assert isinstance(r, StoreError) and "_Unsayable (its message could not be read)" in str(r)
        with pytest.raises(StoreError, match="writer stopped after an unexpected error"):
            await asyncio.wait_for(store.writer.write(_insert_meta("later")), 10)
    finally:
        await store.close()


async def test_a_bug_between_transactions_fails_later_writes_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        await store.add_batch(_batch(issuer, 2))

        def broken_checkpoint() -> None:
            raise RuntimeError("checkpoint bookkeeping broke")

        store.writer._checkpoint = broken_checkpoint  # type: ignore[method-assign]
        store.writer.checkpoint_seconds = 0.0
        await store.add_batch(_batch(issuer, 1))  # committed, then the due checkpoint ends the thread
        await asyncio.to_thread(store.writer.thread.join, 10)
        assert not store.writer.thread.is_alive()
        with pytest.raises(StoreError, match="RuntimeError: checkpoint bookkeeping broke"):
            await asyncio.wait_for(store.add_batch(_batch(issuer, 1)), 10)
    finally:
        await store.close()
    assert await _stored(tmp_path) == 3


async def _one_batch(store: SQLiteStore, *fns: Callable[[sqlite3.Connection], object]) -> list[object]:
    """Run ``fns`` as one batch of the writer (queued while it is held in a job of its own), each outcome."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        held.set()
        release.wait(10)

    first = asyncio.ensure_future(store.writer.write(hold))
    await asyncio.to_thread(held.wait, 10)
    batch = [asyncio.ensure_future(store.writer.write(fn)) for fn in fns]
    await asyncio.sleep(0)  # every write queued
    release.set()
    await asyncio.wait_for(first, 10)
    return await asyncio.wait_for(asyncio.gather(*batch, return_exceptions=True), 10)


def _insert_meta(key: str) -> Callable[[sqlite3.Connection], str]:
    def insert(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (key,))
        return key

    return insert


def _bug(conn: sqlite3.Connection) -> None:
    raise _Bug("a job that should never raise this")


def _failing(conn: sqlite3.Connection) -> None:
    raise ValueError("an ordinary failure: the batch is tried again job by job")


async def test_a_job_committed_before_a_bug_keeps_its_answer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        # one batch: fails on ValueError, so each job runs alone; the first commits, the bug stops the thread
        results = await _one_batch(store, _insert_meta("kept"), _failing, _bug, _insert_meta("never"))
        assert results[0] == "kept"
        assert isinstance(results[1], ValueError)  # its own error, as any failing job gets
        assert isinstance(results[2], StoreError) and "_Bug" in str(results[2])
        assert isinstance(results[3], StoreError) and "restart the service" in str(results[3])
    finally:
        await store.close()
    again = SQLiteStore(tmp_path)
    try:
        keys = {row[0] for row in again._r.execute("SELECT key FROM meta WHERE key IN ('kept', 'never')")}
        assert keys == {"kept"}  # what was answered committed is there, and nothing else
    finally:
        await again.close()


class _UnlockFails(WriterLock):
    """A writer lock whose release fails, as an ``flock`` can on a network file system (ENOLCK)."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with super().held():
            try:
                yield
            finally:
                raise OSError(errno.ENOLCK, "No locks available")


async def test_a_bug_then_a_failed_unlock_still_stops_the_writer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    assert store.writer.lock is None
    store.writer.lock = _UnlockFails(tmp_path / "writer.lock")
    try:
        results = await _one_batch(store, _insert_meta("rolled-back"), _bug)
        for r in results:  # rolled back together: neither is answered as committed, nor with the BaseException
            assert isinstance(r, StoreError) and "_Bug" in str(r)
        with pytest.raises(StoreError, match="writer stopped after an unexpected error"):
            await asyncio.wait_for(store.writer.write(_insert_meta("later")), 10)
    finally:
        store.writer.lock.close()
        store.writer.lock = None
        await store.close()
    again = SQLiteStore(tmp_path)
    try:
        assert not list(again._r.execute("SELECT key FROM meta WHERE key IN ('rolled-back', 'later')"))
    finally:
        await again.close()
