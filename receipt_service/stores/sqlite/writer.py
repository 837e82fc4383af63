"""Group commit: one thread owns the write connection and commits everything queued at once.

Requests queue their writes; the thread takes everything queued, runs it in one transaction and
commits once, so concurrent requests share one fsync. A caller's future resolves only after that
commit returned. A worker of ``serve --workers`` takes its queue only once it holds the
``WriterLock``, so what came while another worker committed joins this commit.

The thread also checkpoints, between two transactions, every ``checkpoint_seconds``: no commit can
land meanwhile, so the checkpoint copies the whole WAL (unless a reader still holds an older
snapshot: the service's own reads are short, a long one from outside holds it back) and the next
commit starts it again from the beginning. (A checkpoint racing the commits never caught up, and
under steady load the WAL grew without bound: 87 MB in 8 s with two workers.)

The database's own errors fail only the jobs they hit. Anything else that escapes the thread (a bug)
stops it for good, but nothing waits forever: the jobs taken and queued, and every later write, fail
with a ``StoreError`` naming the cause, and the store's health check reports it. What was committed
stays committed; a restart goes on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ...errors import StoreError, StoreStoppedError
from ..workers import WriterLock

T = TypeVar("T")
log = logging.getLogger("receipt_service.store")

#: Called inside each write transaction, before its jobs; returns what undoes it if the transaction fails.
Begin = Callable[[sqlite3.Connection], Callable[[], None]]


class _Job:
    __slots__ = ("committed", "error", "fn", "future", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.committed = False


class Writer:
    """The writer thread of one database file: queued jobs, group-committed transactions, checkpoints."""

    def __init__(self, conn: sqlite3.Connection, path: Path, lock: WriterLock | None, begin: Begin) -> None:
        self.path = path
        self.lock = lock
        self._conn = conn
        self._begin = begin
        self._queue: list[_Job] = []
        self._taken: list[_Job] = []  # the jobs of the transaction under way (failed too if the thread ends)
        self.failure: str | None = None  # why the thread ended early, if it did
        self._cond = threading.Condition()
        self._closing = False
        self.checkpoint_seconds = 0.5
        self.checkpoints = 0  # checkpoints that copied the whole WAL (it starts again from its beginning)
        self.checkpoints_incomplete = 0  # PASSIVE checkpoints a reader's snapshot held back
        self.commits = 0
        self.jobs = 0
        self._checkpointed, self._commits_checkpointed = time.monotonic(), 0
        self.thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self.thread.start()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next transaction; its result once that transaction committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._cond:
            if self._closing:  # a new exception each time: one raised again and again grows its traceback
                raise StoreStoppedError(self.failure or "the store is closed")
            self._queue.append(_Job(fn, future))
            self._cond.notify()
        return await future

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.thread.join()

    # ------------------------------------------------------------------ the thread

    def _checkpoint_in(self) -> float | None:
        """Seconds until the next checkpoint is due; None if nothing was committed since the last."""
        if self.commits == self._commits_checkpointed:
            return None
        return self._checkpointed + self.checkpoint_seconds - time.monotonic()

    def _checkpoint_due(self) -> bool:
        due = self._checkpoint_in()
        return due is not None and due <= 0

    def _checkpoint(self) -> None:
        """Copy the WAL into the database (between transactions; a worker holds the writer lock, so no
        other worker's commit lands meanwhile and the copy completes). A failure is logged and tried
        again ``checkpoint_seconds`` later: it must never end the writer thread."""
        self._checkpointed, commits = time.monotonic(), self.commits
        try:
            if self.lock is None:
                busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            else:
                with self.lock.held():
                    busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except (sqlite3.Error, OSError) as exc:  # the database's, or the writer lock's: the writer goes on
            log.warning("WAL checkpoint failed (tried again in %.1fs): %s", self.checkpoint_seconds, exc)
            return
        if busy or copied < frames:  # a reader still needs older frames: due again next period
            self.checkpoints_incomplete += 1
            return
        self._commits_checkpointed = commits
        self.checkpoints += 1

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 (a bug, not the database's errors: logged in full there)
            self._stopped(exc)

    def _stopped(self, exc: BaseException) -> None:
        """The thread ends early: fail what it took and what is queued, and every later write."""
        failure = (
            f"the database writer stopped after an unexpected error ({_described(exc)}); nothing"
            " committed is lost: restart the service"
        )
        with self._cond:
            self._closing, self.failure = True, failure
            jobs, self._taken, self._queue = self._taken + self._queue, [], []
        _fail_unanswered(jobs, failure)
        _resolve(jobs)
        log.critical("%s", failure, exc_info=exc)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._checkpoint_due():
                    self._cond.wait(self._checkpoint_in())
                if not self._queue and self._closing:
                    return
                pending = bool(self._queue)
            if pending:
                self._write_queued()
            if self._checkpoint_due():
                self._checkpoint()

    def _take(self) -> list[_Job]:
        with self._cond:
            jobs, self._queue = self._queue, []
            self._taken = jobs
        return jobs

    def _write_queued(self) -> None:
        """Write everything queued in one transaction, then answer. A worker takes the queue only once it
        holds the writer lock, so requests that arrive while another worker commits join this commit."""
        jobs: list[_Job] = []
        if self.lock is None:
            jobs = self._take()
            self._run_batch(jobs)
            self._answer(jobs)
            return
        try:
            with self.lock.held():
                jobs = self._take()
                self._run_batch(jobs)
        except OSError as exc:  # the lock itself failed (ENOLCK on a network file system, say)
            log.warning("the writer lock of %s failed: %s", self.path, exc)
            bug = exc.__context__
            if bug is not None and not isinstance(bug, Exception):  # a bug in the batch, then the lock's release
                raise bug from None  # failed: the bug ends the thread
            if not jobs:  # not taken: nothing was written
                jobs = self._take()
                for job in jobs:
                    job.error = StoreError(f"the database write failed: the writer lock: {exc}")
        self._answer(jobs)

    def _answer(self, jobs: list[_Job]) -> None:
        with self._cond:
            self._taken = []
        _fail_unanswered(jobs, "the database write failed")
        _resolve(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Run the jobs in one transaction; if it fails, each alone, so one bad job fails only itself."""
        try:
            self._run_jobs(jobs)
        except Exception:
            log.debug("a batch of %d writes failed", len(jobs), exc_info=True)
            if len(jobs) > 1:
                for job in jobs:
                    self._run_batch([job])
                return
            jobs[0].error = jobs[0].error or StoreError("the database write failed")

    def _run_jobs(self, jobs: list[_Job]) -> None:
        conn = self._conn
        undo: Callable[[], None] | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            undo = self._begin(conn)
            for job in jobs:
                job.result = job.fn(conn)
            conn.execute("COMMIT")
            for job in jobs:
                job.committed = True
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if undo is not None:
                undo()
            if len(jobs) == 1:
                jobs[0].error = exc if not isinstance(exc, sqlite3.Error) else StoreError(f"database write: {exc}")
            raise
        self.commits += 1
        self.jobs += len(jobs)


def _described(exc: BaseException) -> str:
    """``Type: message``; the type alone when the exception cannot even say what it is."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:  # noqa: BLE001 (its __str__ may raise anything; the stop must still happen)
        return f"{type(exc).__name__} (its message could not be read)"


def _fail_unanswered(jobs: list[_Job], reason: str) -> None:
    """A job is answered as committed only if it was, and never with a ``BaseException``."""
    for job in jobs:
        if not job.committed and not isinstance(job.error, Exception):
            job.error = StoreStoppedError(reason)


def _resolve(jobs: list[_Job]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while the write ran: nobody waits
            loop.call_soon_threadsafe(_settle, group)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
