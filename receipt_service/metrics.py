"""Prometheus metrics, one registry per service instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
        self.backlog = Gauge("receipt_backlog_hashes", "Accepted hashes not yet in a window tree.", registry=r)
        self.open_anchors = Gauge("receipt_open_anchor_jobs", "Tree roots not yet anchored, all targets.", registry=r)
        self.stored = Gauge("receipt_stored_submissions", "Submissions held in the store.", registry=r)
        self.sqlite_heap = Gauge(
            "receipt_sqlite_heap_bytes",
            "Memory SQLite holds in this process (its page caches and statements), from sqlite3_status.",
            registry=r,
        )
        self.leading = Gauge(
            "receipt_leading_lanes",
            "Lanes this instance leads (closes windows and anchors); on a shared store the others follow.",
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
