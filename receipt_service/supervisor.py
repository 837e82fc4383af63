"""``serve --workers N``: N processes serving one port on the embedded store, watched by this one.

The supervisor takes the data directory, prepares it once (schema, a clock sequence per worker and
lane, the first API key, the public key file), binds the listening socket and starts the workers on
it. A worker that dies is started again; whichever worker holds the leader lock closes windows and
anchors, and another takes over within a lease check when it dies. On SIGTERM or SIGINT the
followers stop first, then the leader, which closes and anchors the last window.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from .access import EVENT_KEY_FILE
from .anchors import LocalLedgerBackend
from .config import Settings
from .errors import ServiceError
from .ledger import load_or_create_key
from .metrics import MULTIPROC_ENV, forget_worker
from .server import WorkerLink, ensure_default_key, open_stores, private_dir, write_public_key
from .stores.sqlite import SQLiteStore
from .stores.workers import ServeLock, leader_pid, reserve_clocks

log = logging.getLogger("receipt_service.supervisor")

READY_SECONDS = 120.0  # a worker that has not said ready by then is taken for broken
RESTART_BACKOFF = (0.5, 30.0)  # a worker that dies soon after starting waits longer each time
METRICS_DIR = "workers-metrics"  # in the data directory: the workers' values for /metrics


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    control: socket.socket
    started: float
    ready: bool = False
    backoff: float = RESTART_BACKOFF[0]


@dataclass
class _Group:
    settings: Settings
    argv: Sequence[str]
    port: int
    serve_lock_fd: int  # every worker keeps it: no other service starts here while one of them runs
    metrics_dir: str  # the workers' metric values, which /metrics renders together
    workers: dict[int, _Worker] = field(default_factory=dict)
    stopping: bool = False
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def spawn(self, index: int, backoff: float = RESTART_BACKOFF[0]) -> None:
        parent, child = socket.socketpair()
        link = WorkerLink(index, self.port, child.fileno())
        cmd = [sys.executable, "-m", "receipt_service._cli", *self.argv, "--worker", str(link)]
        try:
            proc = subprocess.Popen(  # noqa: S603 (our own argv)
                cmd, pass_fds=(child.fileno(), self.serve_lock_fd), env={**os.environ, MULTIPROC_ENV: self.metrics_dir}
            )
        finally:
            child.close()
        self.workers[index] = _Worker(index, proc, parent, time.monotonic(), backoff=backoff)
        self.selector.register(parent, selectors.EVENT_READ, index)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not all(w.ready for w in self.workers.values()):
            if self.stopping:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(f"the workers did not start within {READY_SECONDS:.0f}s; see their log above")
            for key, _ in self.selector.select(min(left, 0.5)):
                w = self.workers[key.data]
                if not self._read(w):
                    code = w.proc.wait()
                    raise ServiceError(f"worker {w.index} exited with code {code} before it served; see its log above")

    def _read(self, w: _Worker) -> bool:
        """Take what a worker said; False at end of file (it exited)."""
        try:
            data = w.control.recv(64)
        except OSError:
            data = b""
        if data.startswith(b"ready"):
            w.ready = True
        return bool(data)

    def run(self) -> None:
        """Until asked to stop: start again every worker that dies."""
        restarts: list[tuple[float, int, float]] = []  # (when, index, backoff)
        while not self.stopping:
            timeout = 0.5 if not restarts else max(0.0, min(0.5, restarts[0][0] - time.monotonic()))
            for key, _ in self.selector.select(timeout):
                w = self.workers[key.data]
                if self._read(w):
                    if w.ready:
                        log.info("worker %d (pid %d) serves again", w.index, w.proc.pid)
                    continue
                self.selector.unregister(w.control)
                w.control.close()
                code = w.proc.wait()  # restarted below unless the group is stopping by then
                forget_worker(w.index, self.metrics_dir)
                lived = time.monotonic() - w.started
                backoff = RESTART_BACKOFF[0] if lived > 60 else min(RESTART_BACKOFF[1], w.backoff * 2)
                log.warning(
                    "worker %d (pid %d) exited with code %s after %.1fs; starting it again in %.1fs",
                    w.index,
                    w.proc.pid,
                    code,
                    lived,
                    backoff,
                )
                del self.workers[w.index]
                restarts.append((time.monotonic() + backoff, w.index, backoff))
                restarts.sort()
            while restarts and restarts[0][0] <= time.monotonic() and not self.stopping:
                _, index, backoff = restarts.pop(0)
                self.spawn(index, backoff)

    def stop(self) -> int:
        """Followers first, then the leader (it closes and anchors the last window); 0 if all stopped cleanly."""
        leader = leader_pid(self.settings.data_dir)
        followers = [w for w in self.workers.values() if w.proc.pid != leader]
        last = [w for w in self.workers.values() if w.proc.pid == leader]
        codes = self._stop(followers) + self._stop(last)
        self.selector.close()
        return 0 if all(c == 0 for c in codes) else 1

    def _stop(self, workers: list[_Worker]) -> list[int]:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace_seconds + 30
        codes = []
        for w in workers:
            try:
                codes.append(w.proc.wait(timeout=grace))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop within %.0fs: killed", w.index, w.proc.pid, grace)
                w.proc.kill()
                codes.append(w.proc.wait())
            w.control.close()
        return codes


def prepare(settings: Settings) -> None:
    """The data directory ready for ``settings.workers`` workers: every lane's file, a clock sequence per
    worker and lane, the first API key, the ledger (checked) and its public key file, the event key."""
    store, lanes, _ = open_stores(settings)
    stores = [s for s in (store, *lanes.values()) if isinstance(s, SQLiteStore)]
    try:
        reserve_clocks(stores, settings.workers)
        ensure_default_key(store, settings.data_dir)
        write_public_key(settings.data_dir, LocalLedgerBackend(settings.data_dir))
        load_or_create_key(settings.data_dir, EVENT_KEY_FILE)  # the workers load it; none makes its own
    finally:
        for s in stores:
            s.close_sync()


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``settings.workers`` workers of ``receipt-service serve`` (``argv``: its arguments) until
    SIGTERM or SIGINT; returns the exit code."""
    private_dir(settings.data_dir)
    held = ServeLock(settings.data_dir)
    held.take()
    try:
        prepare(settings)
        # the port, held by a socket that never listens (so it takes no connections): the workers each
        # listen on it with SO_REUSEPORT, and it stays this service's while a worker restarts
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((settings.host, settings.port))
        # the workers' metric values: anything left by a service killed earlier is gone (no worker of it
        # runs: they hold the serve lock), so the counters start from zero as one process's do
        metrics_dir = settings.data_dir / METRICS_DIR
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(mode=0o700)
        group = _Group(settings, argv, reserved.getsockname()[1], held.fileno(), str(metrics_dir))

        def on_signal(signum: int, frame: FrameType | None) -> None:
            group.stopping = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        try:
            for index in range(settings.workers):
                group.spawn(index)
            group.wait_ready()
            if not group.stopping:
                log.info(
                    "serving on http://%s:%d (data %s, store sqlite, %d workers, supervisor pid %d, window %.3gs)",
                    settings.host,
                    group.port,
                    settings.data_dir,
                    settings.workers,
                    os.getpid(),
                    settings.window_seconds,
                )
                group.run()
            log.info("stopping: the followers first, then the leader, which anchors the open window")
        finally:
            code = group.stop()
            reserved.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("stopped")
        return code
    finally:
        held.release()
