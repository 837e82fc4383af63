"""``SQLiteStore``: the ``Store`` seam over one SQLite file, its writes queued to a ``Writer``."""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import functools
import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from receipt_verifier.history import frontier_root

from ...errors import ConflictError, CorruptRecordError, StoreError, TicksTakenError
from ...ids import ceil_us, iso_ticks
from ..base import (
    AnchorRecord,
    ApiKeyRecord,
    Batch,
    EventRecord,
    SigningKeyRecord,
    StoredBatch,
    StoreStats,
    SubjectHead,
    SubmissionRecord,
    TreeRecord,
    batch_checksum,
    insertion_order,
    seq_hashes,
    tree_checksum,
)
from ..workers import LEADER_FILE, LeaderLock, WriterLock
from .schema import (
    BATCHES_FROM,
    DB_FILE,
    KEEP_CHANGES,
    MAX_SEQ,
    SCHEMA,
    SCHEMA_VERSION,
    batch_from_row,
    connect,
    event_from_row,
    key_from_row,
    migrate,
    tree_from_row,
)
from .writer import Writer

T = TypeVar("T")
log = logging.getLogger("receipt_service.store")


class SQLiteStore:
    """``Store`` over one SQLite database file in the data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str = DB_FILE,
        domain: str | None = None,
        avoid_clock_seqs: Collection[int] = (),
        worker: int | None = None,
        leader: LeaderLock | None = None,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / name
        self.domain = domain
        self.lease_seconds: float | None = None  # the leader lock is held until the process ends
        self.worker = worker  # None: the only process on the file
        self.watch_seconds = 0.025  # how often a worker polls the others' commits and anchors
        self._watched: int | None = None  # the last row of ``changes`` a watch passed on
        try:
            self._w = connect(self.path)
            migrate(self._w)
            self._w.executescript(SCHEMA)
            self._w.execute("PRAGMA wal_autocheckpoint = 0")  # the writer thread checkpoints on its own clock
            fresh = secrets.choice([c for c in range(1 << 14) if c not in avoid_clock_seqs])
            own = int(self._meta_init("clock_seq", str(fresh)))
            if own in avoid_clock_seqs:
                raise StoreError(f"{self.path}: its clock sequence {own} is another store's")
            self._clocks = self._lane_clocks(self._w)  # clock sequence -> value of batches.clock
            self.clock_seq = own if not worker else self._worker_clock(worker)
            self._col = self._clocks[self.clock_seq]
            stored_domain = self._meta_init("domain", domain or "")
            if stored_domain != (domain or ""):
                raise StoreError(f"{self.path} holds the domain {stored_domain or '(none)'!r}, not {domain!r}")
            self.instance_id = self._meta_init("instance_id", secrets.token_hex(4))
            self._meta_init("schema_version", SCHEMA_VERSION)
            self._meta_init("watermark", "0")
            self._meta_init("purged_upto", "0")
            self._meta_init("floor", "0")  # the receive-time floor of the last seal, for the other workers
            self._next_seq = self._max_seq() + 1
            newest = self._w.execute("SELECT window_end FROM trees ORDER BY last_seq DESC LIMIT 1").fetchone()
            self._floor = 0 if newest is None else iso_ticks(newest[0])  # receive times to refuse: before it
            self._r = connect(self.path, readonly=True)
            self._bulk = connect(self.path, readonly=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        self._bulk_lock = threading.Lock()
        shared = worker is not None
        self._writer_lock = WriterLock(self.path.with_name(self.path.name + "-writer.lock")) if shared else None
        self._leader = (leader or LeaderLock(data_dir / LEADER_FILE)) if shared else None
        self.writer = Writer(self._w, self.path, self._writer_lock, self._begun)

    # ------------------------------------------------------------------ the file

    def _meta_init(self, key: str, value: str) -> str:
        self._w.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
        row = self._w.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    @staticmethod
    def _clocks_by_key(conn: sqlite3.Connection) -> dict[str, int]:
        rows = conn.execute("SELECT key, value FROM meta WHERE key = 'clock_seq' OR key LIKE 'clock_seq.%'")
        return {k: int(v) for k, v in rows.fetchall()}

    @classmethod
    def _lane_clocks(cls, conn: sqlite3.Connection) -> dict[int, int]:
        """Clock sequence -> its value in ``batches.clock`` (-1: the file's own)."""
        return {cs: -1 if k == "clock_seq" else cs for k, cs in cls._clocks_by_key(conn).items()}

    def _worker_clock(self, worker: int) -> int:
        row = self._w.execute("SELECT value FROM meta WHERE key = ?", (f"clock_seq.{worker}",)).fetchone()
        if row is None:
            raise StoreError(
                f"{self.path}: no clock sequence is reserved for worker {worker}; start workers with"
                " 'receipt-service serve --workers N', which reserves them"
            )
        return int(row[0])

    def lane_clocks(self) -> dict[str, int]:
        """Every clock sequence of this lane by meta key (``clock_seq``: worker 0's, ``clock_seq.<k>``)."""
        try:
            return self._clocks_by_key(self._r)
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    def reserve_clock(self, worker: int, clock_seq: int) -> None:
        """Keep ``clock_seq`` for worker ``worker`` of ``serve --workers`` (administrative, synchronous)."""
        with self._admin() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (f"clock_seq.{worker}", str(clock_seq))
            )

    def _max_seq(self) -> int:
        row = self._w.execute("SELECT first_seq + count - 1 FROM batches ORDER BY first_seq DESC LIMIT 1").fetchone()
        if row:
            return int(row[0])
        return int(self._w.execute("SELECT value FROM meta WHERE key = 'purged_upto'").fetchone()[0])

    def _begun(self, conn: sqlite3.Connection) -> Callable[[], None]:
        """Run at the start of each write transaction: a worker reads the next seq and the floor of the last
        seal from the file (other workers wrote since). Returns what puts the next seq back on a rollback."""
        start = self._next_seq
        if self.worker is not None:
            self._next_seq = self._max_seq() + 1
            floor = conn.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()
            self._floor = max(self._floor, int(floor[0]))

        def undo() -> None:
            self._next_seq = start

        return undo

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.write(fn)

    async def add_batch(self, batch: Batch) -> int:
        """Store a request's hashes durably (one row); returns the seq of its first item."""

        def write(conn: sqlite3.Connection) -> int:
            if batch.first_ticks < self._floor:  # received before a window that is closing (or closed) ended
                raise TicksTakenError(self._floor - 1)
            first = self._next_seq
            b = batch
            if b.subject:  # the next positions of the subject's log
                row = conn.execute("SELECT size FROM subject_logs WHERE subject = ?", (b.subject,)).fetchone()
                b = replace(b, log_first=row[0] if row else 0)
                conn.execute(
                    "INSERT INTO subject_logs(subject, size) VALUES (?, ?)"
                    " ON CONFLICT(subject) DO UPDATE SET size = excluded.size",
                    (b.subject, b.log_first + b.count),
                )
                conn.executemany(
                    "INSERT INTO subject_hashes(subject, hash, last_seq) VALUES (?, ?, ?)"
                    " ON CONFLICT(subject, hash) DO UPDATE SET last_seq = excluded.last_seq",
                    [(b.subject, h, seq) for seq, h in seq_hashes(first, b.hashes)],
                )
            conn.execute(
                "INSERT INTO batches(first_seq, count, first_ticks, tenant, proof_ids, hashes, nonces, checksum,"
                " subject, log_first, clock) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    first,
                    b.count,
                    b.first_ticks,
                    b.tenant,
                    b.proof_ids,
                    b.hashes,
                    b.nonces,
                    batch_checksum(first, b),
                    b.subject,
                    b.log_first,
                    self._col,
                ),
            )
            self._next_seq = first + b.count
            return first

        return await self._write(write)

    async def seal(self, floor: int) -> tuple[int, int]:
        """Raise the receive-time floor (see ``Store.seal``); runs in the writer's order."""

        def write(conn: sqlite3.Connection) -> tuple[int, int]:
            newest = max((self._newest_ticks(conn, col) for col in self._lane_clocks(conn).values()), default=0)
            self._floor = max(self._floor, floor, ceil_us(newest) if newest else 0)
            if self.worker is not None:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (str(self._floor),))
            return self._next_seq - 1, self._floor

        return await self._write(write)

    async def min_ticks(self, after: int, upto: int) -> int | None:
        """The earliest receive ticks among seqs ``after+1..upto``."""

        rows = self._read(  # a catch-up window's cut only: a range scan of the primary key
            "SELECT MIN(first_ticks + MAX(0, ? - first_seq)) FROM batches WHERE first_seq <= ?"
            " AND first_seq + count - 1 > ?",
            (after + 1, upto, after),
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def last_ticks(self) -> int:
        """The newest receive time stored on this store's clock sequence (0 when none): the id issuer
        resumes after it."""
        return self._newest_ticks(self._r, self._col)

    @staticmethod
    def _newest_ticks(conn: sqlite3.Connection, col: int) -> int:
        row = conn.execute(
            "SELECT first_ticks + count - 1 FROM batches WHERE clock = ? ORDER BY first_ticks DESC LIMIT 1", (col,)
        ).fetchone()
        return int(row[0]) if row else 0

    async def get_submissions(self, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], SubmissionRecord]:
        """Submissions by (clock sequence, receive ticks): this store's ids encode a unique receive time;
        purged ones and other clocks' are absent."""
        purged = int(self._read("SELECT value FROM meta WHERE key = 'purged_upto'", ())[0][0])
        out: dict[tuple[int, int], SubmissionRecord] = {}
        seen: dict[int, StoredBatch] = {}
        for clock, t in ids:
            if not await self.has_clock(clock):
                continue
            rows = self._read(
                "SELECT first_seq, count, first_ticks, tenant, proof_ids, hashes, nonces, checksum, subject, log_first"
                " FROM batches WHERE clock = ? AND first_ticks <= ? ORDER BY first_ticks DESC LIMIT 1",
                (self._clocks[clock], t),
            )
            if not rows:
                continue
            first_seq = rows[0][0]
            stored = seen.get(first_seq) or batch_from_row(rows[0])
            seen[first_seq] = stored
            i = t - stored.batch.first_ticks
            if i < stored.batch.count and stored.first_seq + i > purged:
                out[clock, t] = stored.record(i)
        return out

    async def has_clock(self, clock_seq: int) -> bool:
        """Whether proof ids with this clock sequence are this lane's (issued by any worker)."""
        if clock_seq in self._clocks:
            return True
        if self.worker is None:
            return False
        clocks = self._lane_clocks(self._r)  # a supervisor started since with more workers
        self._clocks = clocks
        return clock_seq in clocks

    async def lead(self) -> int | None:
        """The only process on the file always leads; a worker leads while it holds the leader lock
        (held until the worker stops, so the term is always 1)."""
        return 1 if self._leader is None or self._leader.take() else None

    async def resign(self) -> None:
        """Nothing to hand over now: a worker's lead goes when it closes (or dies)."""

    async def watch(self, wake: Callable[[int, int], None]) -> None:
        """A worker polls ``changes`` for the others' commits and anchors until cancelled; the only
        process on the file returns at once."""
        if self.worker is None:
            return
        if self._watched is None:  # from now on; a watch started again after an error goes on where it was
            self._watched = int(self._read("SELECT coalesce(max(n), 0) FROM changes", ())[0][0])
        while True:
            await asyncio.sleep(self.watch_seconds)
            rows = self._read("SELECT n, first_seq, last_seq FROM changes WHERE n > ? ORDER BY n", (self._watched,))
            if rows and int(rows[0][0]) > self._watched + 1:  # pruned before this worker saw them: wake all
                wake(1, MAX_SEQ)
            for n, first, last in rows:
                wake(int(first), int(last))
                self._watched = int(n)

    async def backlog(self, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to about ``limit`` submissions after the aggregation watermark (up to seq ``upto``), as
        consecutive batches."""

        def read() -> list[StoredBatch]:
            out: list[StoredBatch] = []
            with self._bulk_lock:
                self._bulk.execute("BEGIN")
                try:
                    mark = int(self._bulk.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()[0])
                    cur = self._bulk.execute(BATCHES_FROM, (mark + 1, MAX_SEQ))
                    taken = 0
                    for row in cur:
                        stored = batch_from_row(row)
                        if stored.last_seq <= mark:
                            continue
                        if upto is not None and stored.first_seq > upto:
                            break
                        stored = stored.between(mark + 1, stored.last_seq)
                        expected = out[-1].last_seq + 1 if out else mark + 1
                        if stored.first_seq != expected:
                            raise CorruptRecordError(
                                f"submissions after #{expected - 1} are not consecutive; the store is damaged"
                            )
                        out.append(stored)
                        taken += stored.batch.count
                        if taken >= limit:
                            break
                finally:
                    self._bulk.execute("COMMIT")
            return out

        return await self._bulk_read(read)

    async def commit_window(
        self,
        trees: Sequence[TreeRecord],
        targets: Sequence[str],
        heads: Sequence[SubjectHead] = (),
        *,
        term: int | None = None,
    ) -> None:
        """Record a window's trees, one open anchor job per tree and target, the new heads of the subject
        logs it changed, and move the watermark (the lead of a process, or of a worker holding the
        leader lock, has one term: ``term`` has nothing to check)."""
        if not trees:
            return
        now = time.time_ns()
        first, last = trees[0].first_seq, trees[-1].last_seq

        def write(conn: sqlite3.Connection) -> None:
            mark = int(conn.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()[0])
            if first != mark + 1:
                raise StoreError(f"window starts at #{first} but the watermark is #{mark}; another aggregator ran")
            conn.executemany(
                "INSERT INTO trees(window_id, tree_index, first_seq, last_seq, root, window_start,"
                " window_end, closed_ns, checksum, heads_root, heads_size) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        t.window_id,
                        t.tree_index,
                        t.first_seq,
                        t.last_seq,
                        t.root,
                        t.window_start,
                        t.window_end,
                        now,
                        tree_checksum(t),
                        t.heads_root,
                        t.heads_size,
                    )
                    for t in trees
                ],
            )
            conn.executemany(
                "INSERT INTO subject_heads(subject, upto, size, root, frontier) VALUES (?,?,?,?,?)",
                [(h.subject, last, h.size, h.root, b"".join(h.frontier)) for h in heads],
            )
            conn.executemany(
                "INSERT INTO anchors(window_id, tree_index, target, created_ns) VALUES (?,?,?,?)",
                [(t.window_id, t.tree_index, target, now) for t in trees for target in targets],
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'watermark'", (str(last),))
            self._note_change(conn, first, last)

        await self._write(write)

    async def tree_for_seq(self, seq: int) -> TreeRecord | None:
        """The tree holding submission ``seq``, or None while it is still pending."""
        rows = self._read(
            "SELECT window_id, tree_index, first_seq, last_seq, root, window_start, window_end, checksum, heads_root,"
            " heads_size FROM trees WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
            (seq,),
        )
        if not rows:
            return None
        tree = tree_from_row(rows[0])
        return tree if tree.last_seq >= seq else None

    async def subject_heads(self, upto: int | None = None) -> dict[str, tuple[int, bytes]]:
        """Every subject log's head (size, root) as of the window that ended at seq ``upto`` (None: now),
        in the heads tree's insertion order."""
        rows = self._read(
            "SELECT subject, size, root, (SELECT min(upto) FROM subject_heads WHERE subject = h.subject)"
            " FROM subject_heads h WHERE upto = (SELECT max(upto) FROM subject_heads"
            " WHERE subject = h.subject AND upto <= ?)",
            (MAX_SEQ if upto is None else upto,),
        )
        return insertion_order((subject, size, bytes(root), since) for subject, size, root, since in rows)

    async def subject_frontier(self, subject: str, upto: int | None = None) -> SubjectHead | None:
        """A subject log's head with its compact range as of the window that ended at seq ``upto`` (None:
        the newest; None is also the answer when no window holds the log yet)."""
        rows = self._read(
            "SELECT size, root, frontier FROM subject_heads WHERE subject = ? AND upto <= ? ORDER BY upto DESC LIMIT 1",
            (subject, MAX_SEQ if upto is None else upto),
        )
        if not rows:
            return None
        size, root, frontier = rows[0]
        nodes = tuple(bytes(frontier[i : i + 32]) for i in range(0, len(frontier), 32))
        head = SubjectHead(subject, size, bytes(root), nodes)
        if len(nodes) != int(size).bit_count() or frontier_root(nodes) != head.root:
            raise CorruptRecordError(f"the stored head of {subject}'s log fails its check")
        return head

    async def anchored_windows(self, before: str) -> list[TreeRecord]:
        """Trees with heads whose window ended at or before ``before`` (RFC 3339), newest first."""
        rows = self._read(
            "SELECT window_id, tree_index, first_seq, last_seq, root, window_start, window_end, checksum, heads_root,"
            " heads_size FROM trees WHERE heads_root IS NOT NULL AND window_end <= ?"
            " ORDER BY last_seq DESC, tree_index LIMIT 64",
            (before,),
        )
        return [tree_from_row(r) for r in rows]

    async def tree_batches(self, tree: TreeRecord) -> list[StoredBatch]:
        """The submissions of a tree, as consecutive batches clipped to its seq range."""

        def read() -> list[StoredBatch]:
            with self._bulk_lock:
                rows = self._bulk.execute(BATCHES_FROM, (tree.first_seq, tree.last_seq)).fetchall()
            spans = [batch_from_row(r).between(tree.first_seq, tree.last_seq) for r in rows]
            if not spans or spans[0].first_seq != tree.first_seq or sum(s.batch.count for s in spans) != tree.size:
                raise CorruptRecordError(f"tree {tree.window_id}/{tree.tree_index}: its submissions are missing")
            return spans

        return await self._bulk_read(read)

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]:
        """Every anchor job of a tree, done or open."""
        rows = self._read(
            "SELECT window_id, tree_index, target, anchor, attempts, last_error, created_ns, done_ns FROM anchors"
            " WHERE window_id = ? AND tree_index = ? ORDER BY target",
            (tree.window_id, tree.tree_index),
        )
        return [AnchorRecord(*r) for r in rows]

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]:
        """(tree, target) pairs not anchored yet, oldest first: work left over from a crash."""
        rows = self._read(
            "SELECT t.window_id, t.tree_index, t.first_seq, t.last_seq, t.root, t.window_start, t.window_end,"
            " t.checksum, t.heads_root, t.heads_size, a.target FROM anchors a"
            " JOIN trees t USING (window_id, tree_index) WHERE a.anchor IS NULL ORDER BY t.first_seq",
            (),
        )
        return [(tree_from_row(r[:-1]), r[-1]) for r in rows]

    async def record_anchor(self, tree: TreeRecord, target: str, anchor_json: str, done_ns: int) -> None:
        """Store a finished anchor."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE anchors SET anchor = ?, done_ns = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE window_id = ? AND tree_index = ? AND target = ?",
                (anchor_json, done_ns, tree.window_id, tree.tree_index, target),
            )
            self._note_change(conn, tree.first_seq, tree.last_seq)

        await self._write(write)

    async def record_anchor_failure(self, tree: TreeRecord, target: str, error: str) -> None:
        """Count a failed attempt (the job stays open and is retried)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE anchors SET attempts = attempts + 1, last_error = ?"
                " WHERE window_id = ? AND tree_index = ? AND target = ?",
                (error[:1000], tree.window_id, tree.tree_index, target),
            )

        await self._write(write)

    def _note_change(self, conn: sqlite3.Connection, first: int, last: int) -> None:
        """Tell the other workers (their ``watch``) that submissions ``first..last`` changed state."""
        if self.worker is None:
            return
        n = conn.execute("INSERT INTO changes(first_seq, last_seq) VALUES (?, ?)", (first, last)).lastrowid
        if n is not None and n % 1000 == 0:
            conn.execute("DELETE FROM changes WHERE n <= ?", (n - KEEP_CHANGES,))

    async def put_fabric_block(self, channel: str, number: int, block: bytes) -> None:
        """Keep a Fabric block (evidence for anchors); a block already kept stays as it is."""
        checksum = hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO fabric_blocks (channel, number, block, checksum) VALUES (?, ?, ?, ?)",
                (channel, number, block, checksum),
            )

        await self._write(write)

    async def get_fabric_block(self, channel: str, number: int) -> bytes | None:
        """A kept Fabric block, checked against its checksum, or None."""
        rows = self._read(
            "SELECT block, checksum FROM fabric_blocks WHERE channel = ? AND number = ?", (channel, number)
        )
        if not rows:
            return None
        block, checksum = rows[0]
        if hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest() != checksum:
            raise CorruptRecordError(f"stored Fabric block {number} of {channel} fails its checksum")
        return bytes(block)

    async def purge(self, before_ns: int) -> int:
        """Drop the oldest trees while they closed before ``before_ns`` and are fully anchored, with
        their submissions and the subject index entries whose newest submission went; returns how many
        submissions went (they answer 404 from then on)."""

        def write(conn: sqlite3.Connection) -> int:
            purged = int(conn.execute("SELECT value FROM meta WHERE key = 'purged_upto'").fetchone()[0])
            upto = purged
            rows = conn.execute(
                "SELECT window_id, tree_index, last_seq, closed_ns, EXISTS (SELECT 1 FROM anchors a WHERE"
                " a.window_id = t.window_id AND a.tree_index = t.tree_index AND a.anchor IS NULL)"
                " FROM trees t ORDER BY first_seq"
            )
            gone = []
            for window_id, tree_index, last_seq, closed_ns, open_jobs in rows:
                if closed_ns >= before_ns or open_jobs:
                    break
                gone.append((window_id, tree_index))
                upto = last_seq
            for key in gone:
                conn.execute("DELETE FROM anchors WHERE window_id = ? AND tree_index = ?", key)
                conn.execute("DELETE FROM trees WHERE window_id = ? AND tree_index = ?", key)
            forget = conn.execute(  # the subjects' records in (purged, upto]
                "SELECT first_seq, subject, hashes FROM batches WHERE subject != '' AND first_seq <= ?"
                " AND first_seq + count - 1 > ?",
                (upto, purged),
            )
            conn.executemany(
                "DELETE FROM subject_hashes WHERE subject = ? AND hash = ? AND last_seq <= ?",
                [
                    (subject, h, upto)
                    for first, subject, hashes in forget.fetchall()
                    for seq, h in seq_hashes(first, hashes)
                    if purged < seq <= upto
                ],
            )
            conn.execute("DELETE FROM batches WHERE first_seq + count - 1 <= ?", (upto,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'purged_upto'", (str(upto),))
            return upto - purged

        return await self._write(write)

    # ------------------------------------------------------------------ subjects, keys, access events

    async def subject_records(self, subject: str, after: int, limit: int) -> list[SubmissionRecord]:
        """The subject's records in log order, from log position ``after`` + 1 on (at most ``limit``)."""
        purged = int(self._read("SELECT value FROM meta WHERE key = 'purged_upto'", ())[0][0])
        rows = self._read(
            "SELECT first_seq, count, first_ticks, tenant, proof_ids, hashes, nonces, checksum, subject, log_first"
            " FROM batches WHERE subject = ? AND log_first + count - 1 > ? ORDER BY first_seq LIMIT ?",
            (subject, after, limit),
        )
        out: list[SubmissionRecord] = []
        for row in rows:
            stored = batch_from_row(row)
            for i in range(stored.batch.count):
                rec = stored.record(i)
                if rec.log_pos > after and rec.seq > purged and len(out) < limit:
                    out.append(rec)
        return out

    async def has_record(self, subject: str, record_hash: bytes) -> bool:
        """Whether ``record_hash`` was submitted for ``subject`` in this store's domain (and retention has not
        dropped its newest submission)."""
        return bool(self._read("SELECT 1 FROM subject_hashes WHERE subject = ? AND hash = ?", (subject, record_hash)))

    async def register_subject(self, subject: str, tenant: str, key: SigningKeyRecord) -> None:
        """Record that ``tenant``'s app owns ``subject``, with the owner's key (ConflictError: another tenant's)."""

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT tenant FROM subjects WHERE subject = ?", (subject,)).fetchone()
            if row is not None and row[0] != tenant:
                raise ConflictError(f"subject {subject} is registered by another app; choose another pseudonym")
            conn.execute(
                "INSERT OR IGNORE INTO subjects(subject, tenant, created) VALUES (?,?,?)",
                (subject, tenant, key.created),
            )
            _insert_key(conn, key)

        await self._write(write)

    async def subject_tenant(self, subject: str) -> str | None:
        """The tenant whose app registered ``subject``, or None."""
        rows = self._read("SELECT tenant FROM subjects WHERE subject = ?", (subject,))
        return str(rows[0][0]) if rows else None

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Register a receiving party's key (the same key again is a no-op)."""
        await self._write(lambda conn: _insert_key(conn, key))

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        """A registered key by thumbprint."""
        rows = self._read("SELECT key_id, party, tenant, jwk, created FROM signing_keys WHERE key_id = ?", (key_id,))
        return SigningKeyRecord(*rows[0]) if rows else None

    async def seen_event(self, replay_id: str) -> bool:
        """Whether an event with these signed bytes was accepted before."""
        return bool(self._read("SELECT 1 FROM access_events WHERE replay_id = ?", (replay_id,)))

    async def add_event(self, event: EventRecord) -> bool:
        """Keep an accepted event; False when its replay id is already there (a replay)."""

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO access_events(replay_id, event_hash, owner, receiver, domain, action, time,"
                " expiry, doc, proof_id, tenant) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    event.replay_id,
                    event.event_hash,
                    event.owner,
                    event.receiver,
                    event.domain,
                    event.action,
                    event.time,
                    event.expiry,
                    event.doc,
                    event.proof_id,
                    event.tenant,
                ),
            )
            return cur.rowcount == 1

        return await self._write(write)

    async def events(self, owner: str) -> list[EventRecord]:
        """Every access event of a subject, in acceptance order."""
        rows = self._read(
            "SELECT replay_id, event_hash, owner, receiver, domain, action, time, expiry, doc, proof_id, tenant, n"
            " FROM access_events WHERE owner = ? ORDER BY n",
            (owner,),
        )
        return [event_from_row(r) for r in rows]

    async def last_decision(self, owner: str, receiver: str, domain: str) -> EventRecord | None:
        """The owner's latest grant, deny or revoke for this receiver and domain."""
        rows = self._read(
            "SELECT replay_id, event_hash, owner, receiver, domain, action, time, expiry, doc, proof_id, tenant, n"
            " FROM access_events WHERE owner = ? AND receiver = ? AND domain = ?"
            " AND action IN ('grant', 'deny', 'revoke') ORDER BY n DESC LIMIT 1",
            (owner, receiver, domain),
        )
        return event_from_row(rows[0]) if rows else None

    # ------------------------------------------------------------------ API keys

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not."""
        rows = self._read(
            "SELECT key_id, tenant, secret_hash, scopes, created, revoked, role FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        return key_from_row(rows[0]) if rows else None

    def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key (administrative: synchronous, from the CLI or at first start)."""
        with self._admin() as conn:
            conn.execute(
                "INSERT INTO api_keys(key_id, tenant, secret_hash, scopes, created, role) VALUES (?,?,?,?,?,?)",
                (key.key_id, key.tenant, key.secret_hash, ",".join(sorted(key.scopes)), key.created, key.role),
            )

    def revoke_api_key(self, key_id: str, when: str) -> bool:
        """Mark a key revoked; False when there is no such active key."""
        with self._admin() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (when, key_id))
            return cur.rowcount == 1

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        rows = self._read_all(
            "SELECT key_id, tenant, secret_hash, scopes, created, revoked, role FROM api_keys ORDER BY created, key_id"
        )
        return [key_from_row(r) for r in rows]

    def _admin(self) -> _AdminTx:
        return _AdminTx(self)

    def _read_all(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._r.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    # ------------------------------------------------------------------ health

    async def stats(self) -> StoreStats:
        """Row counts for metrics."""
        (mark,) = self._read("SELECT value FROM meta WHERE key = 'watermark'", ())[0]
        (purged,) = self._read("SELECT value FROM meta WHERE key = 'purged_upto'", ())[0]
        last = self._next_seq - 1
        if self.worker is not None:  # the other workers' submissions count too
            rows = self._read("SELECT first_seq + count - 1 FROM batches ORDER BY first_seq DESC LIMIT 1", ())
            last = int(rows[0][0]) if rows else int(purged)
        total = last - int(purged)
        (trees,) = self._read("SELECT count(*) FROM trees", ())[0]
        (open_,) = self._read("SELECT count(*) FROM anchors WHERE anchor IS NULL", ())[0]
        try:
            wal = self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            wal = 0
        return StoreStats(int(total), max(0, last - int(mark)), int(trees), int(open_), wal)

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers and the writer runs."""
        if not self.writer.thread.is_alive():
            raise StoreError("the database writer thread has stopped")
        self._read("SELECT 1", ())
        await self._write(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        await asyncio.to_thread(self.writer.stop)
        self.close_sync()

    def close_sync(self) -> None:
        """Close without an event loop (CLI use); queued writes are finished first."""
        self.writer.stop()
        for conn in (self._r, self._bulk, self._w):
            conn.close()
        if self._leader is not None:
            self._leader.release()
        if self._writer_lock is not None:
            self._writer_lock.close()

    # ------------------------------------------------------------------ helpers

    def _read(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._r.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    async def _bulk_read(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None


class _AdminTx:
    """A short synchronous write transaction on its own connection (keys are rare writes)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._conn = connect(store.path)

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._conn.close()


def _insert_key(conn: sqlite3.Connection, key: SigningKeyRecord) -> None:
    row = conn.execute("SELECT party FROM signing_keys WHERE key_id = ?", (key.key_id,)).fetchone()
    if row is not None and row[0] != key.party:
        raise ConflictError(f"key {key.key_id} is already registered for another party")
    conn.execute(
        "INSERT OR IGNORE INTO signing_keys(key_id, party, tenant, jwk, created) VALUES (?,?,?,?,?)",
        (key.key_id, key.party, key.tenant, key.jwk, key.created),
    )


def sqlite_heap_bytes() -> int | None:
    """The memory SQLite holds in this process now (``sqlite3_status64(SQLITE_STATUS_MEMORY_USED)``), or None
    where the sqlite3 module does not export it."""
    fn = _status_fn()
    if fn is None:
        return None
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    if fn(0, ctypes.byref(current), ctypes.byref(highwater), 0) != 0:
        return None
    return int(current.value)


@functools.cache
def _status_fn() -> Any:
    try:
        return ctypes.CDLL(_sqlite3.__file__).sqlite3_status64
    except (OSError, AttributeError):
        return None


def open_domain_stores(data_dir: Path, main: SQLiteStore, domains: Iterable[str]) -> dict[str, SQLiteStore]:
    """One store per data-sharing domain beside the main one (a worker's stores share its leader lock:
    one process leads every lane). Every clock sequence of every lane (each file's own and those reserved
    for workers) is distinct: files that exist are opened first, so a new one avoids all of theirs."""
    names = {d: f"receipts.{d}.sqlite3" for d in domains}
    used = set(main.lane_clocks().values())
    out: dict[str, SQLiteStore] = {}
    try:
        for domain in sorted(names, key=lambda d: not (data_dir / names[d]).exists()):
            store = SQLiteStore(
                data_dir,
                name=names[domain],
                domain=domain,
                avoid_clock_seqs=used,
                worker=main.worker,
                leader=main._leader,
            )
            out[domain] = store
            clocks = set(store.lane_clocks().values())
            if clocks & used:
                raise StoreError(
                    f"{store.path}: clock sequence(s) {sorted(clocks & used)} belong to another lane too, so their"
                    " proof ids could not be told apart; restore the data directory from a backup"
                )
            used |= clocks
    except BaseException:
        for opened in out.values():
            opened.close_sync()
        raise
    return {d: out[d] for d in names}
