"""Lanes: one stream of submissions per data-sharing domain, so a tree never mixes domains.

Each lane has its own store (its own ``seq`` range, watermark and subject logs), window clock and
anchor targets. Its proof ids carry its store's clock sequence, so a proof id names its lane. The
lane without a domain serves keys from before roles (v1 receipts, every anchor target).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from receipt_verifier import proof_id as pid

from .anchors import AnchorBackend, LocalLedgerBackend
from .config import Settings
from .errors import ConfigError, StoreError, TicksTakenError
from .ids import IssuedBatch, ProofIdIssuer
from .metrics import Metrics
from .proofs import ProofReader
from .stores.base import Batch, Store
from .windows import Aggregator


@dataclass
class Lane:
    """A domain's store, window clock and proof-id issuer."""

    domain: str | None
    store: Store
    aggregator: Aggregator
    reader: ProofReader
    issuer: ProofIdIssuer

    async def store_hashes(
        self, tenant: str, hashes: Sequence[bytes], packed: bytes, nonces: bytes, subject: str | None = None
    ) -> IssuedBatch:
        """Issue proof ids for a request's hashes and store them durably; returns once they are.

        On a store shared by several instances, ids are re-issued when another instance used the
        same clock sequence past this one's last ticks (the store refuses the batch, never a duplicate)."""
        for _ in range(8):
            if self.issuer.clock_seq != self.store.clock_seq:  # a shared store moved this instance to another clock
                self.issuer = ProofIdIssuer(self.store.clock_seq, self.store.last_ticks())
            issued = self.issuer.issue_batch(hashes, time.time_ns())
            try:
                await self.store.add_batch(
                    Batch(tenant, issued.first_ticks, issued.proof_id_bytes, packed, nonces, subject or "")
                )
            except TicksTakenError as exc:
                self.issuer.resume_after(exc.last_ticks)
                continue
            return issued
        raise StoreError("proof ids could not be issued: other instances keep taking this clock sequence's ticks")


def make_lane(
    domain: str | None, store: Store, backends: Sequence[AnchorBackend], settings: Settings, metrics: Metrics
) -> Lane:
    """A lane over ``store`` whose trees go to ``backends``."""
    s = settings
    agg = Aggregator(
        store,
        backends,
        metrics,
        window_seconds=s.window_seconds,
        max_leaves=s.max_leaves,
        max_subjects=s.max_subjects_per_window,
        retry_max_seconds=s.anchor_retry_max_seconds,
        empty_window_seconds=s.empty_window_seconds or None,
        retention_seconds=None if s.retention_days is None else s.retention_days * 86400,
    )
    agg.leadership.check_seconds = s.lease_seconds / 3  # a leader renews its lease well before it runs out
    return Lane(domain, store, agg, ProofReader(agg), ProofIdIssuer(store.clock_seq, store.last_ticks()))


def domain_backends(domain: str, settings: Settings, backends: Iterable[AnchorBackend]) -> list[AnchorBackend]:
    """The backends of a domain's targets (``local`` is the local ledger, ``fabric:<ch>`` a channel)."""
    by_name: dict[str, AnchorBackend] = {}
    for b in backends:
        by_name["local" if isinstance(b, LocalLedgerBackend) else b.target] = b
    out = []
    for name in settings.targets_for(domain):
        if name not in by_name:
            raise ConfigError(f"domain {domain}: anchor target {name!r} is not configured")
        out.append(by_name[name])
    return out


class Lanes:
    """Every lane of a service, found by domain or by the clock sequence inside a proof id."""

    def __init__(self, lanes: Iterable[Lane]) -> None:
        self.all = list(lanes)
        self._by_domain = {lane.domain: lane for lane in self.all}
        if len({lane.store.clock_seq for lane in self.all}) != len(self.all):
            raise ConfigError("two lanes share a clock sequence; their proof ids could not be told apart")

    def domain(self, domain: str | None) -> Lane | None:
        """The lane of a domain (None: the v1 lane)."""
        return self._by_domain.get(domain)

    async def by_id(self, ids: Sequence[tuple[str, int]]) -> Mapping[int, tuple[Lane, list[tuple[str, int]]]]:
        """Group parsed proof ids by their lane (ids of no lane are left out: they are simply not found)."""
        out: dict[int, tuple[Lane, list[tuple[str, int]]]] = {}
        lanes: dict[int, Lane | None] = {}
        for text, ticks in ids:
            clock = pid.parse_proof_id(text).clock_seq
            if clock not in lanes:  # a store shared by several instances knows each instance's clock sequence
                lanes[clock] = await self._lane_of(clock)
            lane = lanes[clock]
            if lane is not None:
                out.setdefault(id(lane), (lane, []))[1].append((text, ticks))
        return out

    async def _lane_of(self, clock: int) -> Lane | None:
        for lane in self.all:
            if await lane.store.has_clock(clock):
                return lane
        return None
