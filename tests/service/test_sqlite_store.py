"""The SQLite store: durable group commit, consecutive seqs, windows as ranges, checks on read."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from receipt_service.errors import CorruptRecordError, StoreError
from receipt_service.ids import ProofIdIssuer
from receipt_service.sqlite_store import DB_FILE, SQLiteStore
from receipt_service.store import NewSubmission, TreeRecord
from receipt_service.windows import build_trees


def _items(issuer: ProofIdIssuer, n: int) -> list[NewSubmission]:
    hashes = [os.urandom(32) for _ in range(n)]
    return [
        NewSubmission(i.ticks, i.proof_id_bytes, h, os.urandom(16))
        for i, h in zip(issuer.issue_batch(hashes, 1_763_712_000_000_000_000), hashes, strict=True)
    ]


async def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        firsts = await asyncio.gather(*(store.add_submissions("t", _items(issuer, 3)) for _ in range(200)))
        assert sorted(firsts) == list(range(1, 601, 3))  # consecutive, no gaps, no overlaps
        assert store.jobs == 200
        assert store.commits < store.jobs  # group commit: fewer fsyncs than requests
        assert (await store.stats()).submissions == 600
    finally:
        await store.close()


async def test_rows_survive_reopen_and_ids_resume(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    items = _items(issuer, 5)
    await store.add_submissions("t", items)
    clock_seq, instance = store.clock_seq, store.instance_id
    await store.close()
    again = SQLiteStore(tmp_path)
    try:
        assert (again.clock_seq, again.instance_id) == (clock_seq, instance)
        assert again.last_ticks() == items[-1].ticks
        rows = await again.get_submissions([i.ticks for i in items])
        assert [rows[i.ticks].hash for i in items] == [i.hash for i in items]
        assert await again.add_submissions("t", _items(ProofIdIssuer(clock_seq, again.last_ticks()), 1)) == 6
    finally:
        await again.close()


async def test_windows_move_the_watermark_and_reject_a_second_aggregator(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        await store.add_submissions("t", _items(issuer, 7))
        rows = await store.backlog(100)
        assert [r.seq for r in rows] == list(range(1, 8))
        built = build_trees("w-1", rows, 3, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
        assert [b.record.size for b, _ in built] == [3, 3, 1]
        await store.commit_window([(b.record, leaves) for b, leaves in built], ["local-x"])
        assert await store.backlog(100) == []
        with pytest.raises(StoreError, match="watermark"):
            await store.commit_window([(b.record, leaves) for b, leaves in built[:1]], ["local-x"])
        tree = await store.tree_for_seq(5)
        assert tree is not None and (tree.tree_index, tree.first_seq, tree.last_seq) == (1, 4, 6)
        assert len(await store.open_anchor_jobs()) == 3
        await store.record_anchor(tree, "local-x", "{}", 1)
        assert len(await store.open_anchor_jobs()) == 2
        await store.add_submissions("t", _items(issuer, 1))
        assert await store.tree_for_seq(8) is None  # pending: not in any tree yet
    finally:
        await store.close()


async def test_purge_drops_only_fully_anchored_old_trees(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        await store.add_submissions("t", _items(issuer, 4))
        built = build_trees("w-1", await store.backlog(10), 2, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
        await store.commit_window([(b.record, leaves) for b, leaves in built], ["local-x"])
        first: TreeRecord = built[0][0].record
        await store.record_anchor(first, "local-x", "{}", 1)
        assert await store.purge(0) == 0  # nothing is older than the epoch
        assert await store.purge(2**62) == 2  # the anchored tree goes; the open one stays
        assert await store.tree_for_seq(1) is None and await store.tree_for_seq(3) is not None
        assert len(await store.get_submissions([r.ticks for r in await _all(store)])) == 2
    finally:
        await store.close()


async def _all(store: SQLiteStore) -> list[NewSubmission]:
    conn = sqlite3.connect(store.path)
    rows = conn.execute("SELECT ticks, proof_id, hash, nonce FROM submissions").fetchall()
    conn.close()
    return [NewSubmission(*r) for r in rows]


@pytest.mark.parametrize("column", ["hash", "nonce", "tenant", "ticks"])
async def test_a_damaged_row_is_refused(tmp_path: Path, column: str) -> None:
    store = SQLiteStore(tmp_path)
    try:
        items = _items(ProofIdIssuer(store.clock_seq), 1)
        await store.add_submissions("t", items)
        conn = sqlite3.connect(tmp_path / DB_FILE)
        with conn:
            if column == "ticks":
                conn.execute("UPDATE submissions SET ticks = ticks + 1")
            elif column == "tenant":
                conn.execute("UPDATE submissions SET tenant = 'other'")
            else:
                conn.execute(f"UPDATE submissions SET {column} = zeroblob(length({column}))")
        conn.close()
        ticks = items[0].ticks + (1 if column == "ticks" else 0)
        with pytest.raises(CorruptRecordError, match="integrity check"):
            await store.get_submissions([ticks])
        with pytest.raises(CorruptRecordError):
            await store.backlog(10)
    finally:
        await store.close()


async def test_a_failing_write_fails_only_its_own_request(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    issuer = ProofIdIssuer(store.clock_seq)
    try:
        good = _items(issuer, 2)
        dup = [good[0]]  # same ticks: violates the unique index

        async def first_then_dup() -> None:
            await store.add_submissions("t", good)
            await store.add_submissions("t", dup)

        results = await asyncio.gather(
            first_then_dup(), *(store.add_submissions("t", _items(issuer, 1)) for _ in range(5)), return_exceptions=True
        )
        assert isinstance(results[0], StoreError)
        assert all(isinstance(r, int) for r in results[1:])
        assert (await store.stats()).submissions == 7
        assert [r.seq for r in await store.backlog(100)] == list(range(1, 8))  # still consecutive
    finally:
        await store.close()


def test_an_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        SQLiteStore(tmp_path)
