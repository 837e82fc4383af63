"""``SQLiteStore``: the ``Store`` seam over one SQLite file, its writes queued to a ``Writer``."""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import functools
import secrets
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import StoreError, StoreStoppedError, TicksTakenError
from ...ids import ceil_us, iso_ticks
from ..base import (
    Batch,
    StoredBatch,
    StoreStats,
    SubmissionRecord,
    batch_checksum,
    seq_hashes,
)
from ..workers import LEADER_FILE, LeaderLock, WriterLock
from .access import AccessRecords
from .schema import (
    DB_FILE,
    MAX_SEQ,
    SCHEMA,
    SCHEMA_VERSION,
    batch_from_row,
    connect,
    migrate,
)
from .windows import WindowRecords
from .writer import Writer


class SQLiteStore(WindowRecords, AccessRecords):
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
        writer_lock = WriterLock(self.path.with_name(self.path.name + "-writer.lock")) if shared else None
        self._leader = (leader or LeaderLock(data_dir / LEADER_FILE)) if shared else None
        self.writer = Writer(self._w, self.path, writer_lock, self._begun)

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

        def undo() -> None:
            self._next_seq = start

        if self.worker is not None:
            try:
                self._next_seq = self._max_seq() + 1
                floor = conn.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()
                self._floor = max(self._floor, int(floor[0]))
            except BaseException:
                undo()
                raise
        return undo

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

    # ------------------------------------------------------------------ subject logs

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
            raise StoreStoppedError(self.writer.failure or "the database writer thread has stopped")
        self._read("SELECT 1", ())
        await self._write(lambda conn: conn.execute("SELECT 1").fetchone())

    def stopped(self) -> str | None:
        """The writer thread's failure, once it ended early (a bug): only a restart brings it back."""
        return self.writer.failure

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
        if self.writer.lock is not None:
            self.writer.lock.close()


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
