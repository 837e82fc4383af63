"""What the worker processes of one data directory share beside its SQLite files (``serve --workers``).

- ``LeaderLock``: the lead of every lane, an exclusive ``flock`` that the kernel drops when its holder
  dies, so a crashed leader is replaced at the next lease check and a paused one is never doubled.
- ``WriterLock``: one write transaction at a time across processes; a blocking ``flock`` hands the
  database over at once, where SQLite's own busy handler would sleep and retry.
- ``reserve_clocks``: a clock sequence per worker and lane, all distinct (a proof id names its lane
  by its clock sequence, and each worker issues its own receive ticks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import StoreError

LEADER_FILE = "leader.lock"
SERVE_FILE = "serve.lock"
MAX_WORKERS = 64


def _hold(path: Path) -> tuple[BinaryIO | None, str]:
    """``path`` locked exclusively (``flock``) with this process's pid in it; or (None, the pid written by the
    process that holds it). The lock lasts while the file stays open (here, or in a child it was passed to)."""
    f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = f.read().decode(errors="replace").strip()
        f.close()
        return None, holder
    f.truncate(0)
    f.write(f"{os.getpid()}\n".encode())
    f.flush()
    return f, ""


class LeaderLock:
    """The lead of a data directory's lanes: held by one process (and its every lane) until it exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._mutex = threading.Lock()

    def take(self) -> bool:
        """Take the lead if no other process holds it; True while this process holds it."""
        with self._mutex:
            if self._file is not None:
                return True
            self._file, _ = _hold(self.path)
            return self._file is not None

    def release(self) -> None:
        """Hand the lead over (it goes anyway when the process exits)."""
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None


def leader_pid(data_dir: Path) -> int | None:
    """The pid of the worker that leads, if one does (read by the supervisor to stop it last)."""
    path = data_dir / LEADER_FILE
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().decode(errors="replace").strip()
                return int(text) if text.isdigit() else None
            return None  # nobody holds it
    except FileNotFoundError:
        return None


class WriterLock:
    """Write transactions one at a time across the processes sharing a database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Wait for the lock (blocking: the caller is the store's writer thread), hold it inside."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Let go of the file (the store is closed)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ClockFile(Protocol):
    """A lane's store file, as far as clock reservation needs it."""

    def lane_clocks(self) -> dict[str, int]: ...

    def reserve_clock(self, worker: int, clock_seq: int) -> None: ...


def reserve_clocks(stores: Sequence[ClockFile], workers: int) -> None:
    """Give workers 1..workers-1 a clock sequence in every lane (worker 0 uses each file's own), distinct
    across all lanes and workers; kept reservations stay. Run by the supervisor before workers start."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}")
    used = {cs for store in stores for cs in store.lane_clocks().values()}
    for store in stores:
        have = store.lane_clocks()
        for k in range(1, workers):
            if f"clock_seq.{k}" in have:
                continue
            cs = secrets.choice([c for c in range(1 << 14) if c not in used])
            store.reserve_clock(k, cs)
            used.add(cs)


class ServeLock:
    """One service (a single process, or a supervisor and its workers) per data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SERVE_FILE
        self._file: BinaryIO | None = None

    def take(self) -> None:
        """Hold the data directory; ``StoreError`` naming the holder when another service has it."""
        self._file, holder = _hold(self.path)
        if self._file is None:
            raise StoreError(
                f"another receipt-service (pid {holder or 'unknown'}) serves the data directory {self.path.parent};"
                " stop it first, or give this one its own --data-dir"
            )

    def fileno(self) -> int:
        """The lock's file: a worker that inherits it holds the directory too, until the last of them exits."""
        if self._file is None:
            raise ValueError("the serve lock is not held")
        return self._file.fileno()

    def release(self) -> None:
        """Let another service start here (once every process sharing the lock's file let go of it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
