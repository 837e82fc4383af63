"""Prometheus metrics, one registry per service instance.

Under ``serve --workers`` the supervisor gives its workers one directory (``MULTIPROC_ENV``, read by
prometheus_client when it is imported): each worker keeps its values there in files named for its index
(``use_worker_files``), and ``/metrics``, whichever worker answers, renders them all (counters and
histograms summed). A worker started again goes on from the counts its predecessor left, so the sums
never drop and the directory holds one set of files per worker, however often workers restart.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_files(index: int) -> str:
    """The name in the files of worker ``index`` (one process at a time has it: the supervisor starts a
    worker again only after the last one with its index has exited)."""
    return f"worker{index}"


def use_worker_files(index: int) -> None:
    """This process is worker ``index``: keep its values in that worker's files (call before any metric
    is made; prometheus_client names them by pid otherwise)."""
    values.ValueClass = values.MultiProcessValue(lambda: worker_files(index))  # type: ignore[no-untyped-call]


def forget_worker(index: int, directory: str) -> None:
    """Worker ``index`` exited: its live gauges stop counting (its counters and histograms stay, and the
    worker started in its place goes on from them)."""
    mark_process_dead(worker_files(index), directory)  # type: ignore[no-untyped-call]


class Metrics:
    """Everything ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hashes_accepted = Counter(  # no tenant label: /metrics needs no key, so it names no tenant
            "receipt_hashes_accepted", "Hashes durably stored and acknowledged.", registry=r
        )
        self.requests = Counter(
            "receipt_http_requests", "HTTP requests answered, by route and status.", ["route", "status"], registry=r
        )
        self._answered: dict[tuple[str, int], Counter] = {}  # routes are patterns and statuses few: bounded
        self.window_leaves = Histogram(
            "receipt_window_leaves",
            "Leaves per closed window.",
            buckets=(1, 10, 100, 1_000, 10_000, 25_000, 100_000, 1_000_000),
            registry=r,
        )
        self.window_build_seconds = Histogram(
            "receipt_window_build_seconds",
            "Time to read, build and commit a window's trees.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.anchor_seconds = Histogram(
            "receipt_anchor_seconds",
            "Time for one anchor backend to take one tree root.",
            ["target"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.anchor_failures = Counter(
            "receipt_anchor_failures", "Failed anchor attempts (each is retried).", ["target"], registry=r
        )

        def store_gauge(name: str, doc: str) -> Gauge:  # read from the store: the same in every worker
            return Gauge(name, doc, registry=r, multiprocess_mode="livemostrecent")

        def own_gauge(name: str, doc: str) -> Gauge:  # a process's own: summed over the live workers
            return Gauge(name, doc, registry=r, multiprocess_mode="livesum")

        self.backlog = store_gauge("receipt_backlog_hashes", "Accepted hashes not yet in a window tree.")
        self.open_anchors = store_gauge("receipt_open_anchor_jobs", "Tree roots not yet anchored, all targets.")
        self.stored = store_gauge("receipt_stored_submissions", "Submissions held in the store.")
        self.wal = store_gauge(
            "receipt_sqlite_wal_bytes",
            "Bytes of the embedded store's write-ahead logs on disk, every lane (checkpointed every 0.5 s).",
        )
        self.sqlite_heap = own_gauge(
            "receipt_sqlite_heap_bytes",
            "Memory SQLite holds in this process (its page caches and statements), from sqlite3_status;"
            " under serve --workers, summed over the workers.",
        )
        self.leading = own_gauge(
            "receipt_leading_lanes",
            "Lanes this instance (or its workers, summed) leads: closes windows and anchors; on a shared store the"
            " others follow.",
        )

    def answered(self, route: str, status: int) -> Counter:
        """The request counter of one route and status (prometheus_client's ``labels`` costs a lock and a
        tuple per call; this is the hot path)."""
        child = self._answered.get((route, status))
        if child is None:
            child = self._answered[route, status] = self.requests.labels(route, str(status))
        return child

    @property
    def shared(self) -> bool:
        """The values are kept with other processes' (``serve --workers``)."""
        return bool(os.environ.get(MULTIPROC_ENV))

    def render(self) -> bytes:
        """The text exposition format (every worker's values under ``serve --workers``)."""
        if not self.shared:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
        return generate_latest(merged)
