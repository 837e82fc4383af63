"""Lanes: one stream of submissions per data-sharing domain, so a tree never mixes domains.

Each lane has its own store (its own ``seq`` range, watermark and subject logs), window clock and
anchor targets. Its proof ids carry its store's clock sequence, so a proof id names its lane. The
lane without a domain serves keys from before roles (v1 receipts, every anchor target).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from receipt_verifier import proof_id as pid

from .anchors import AnchorBackend, LocalLedgerBackend
from .config import Settings
from .errors import ConfigError
from .ids import ProofIdIssuer
from .metrics import Metrics
from .proofs import ProofReader
from .stores.base import Store
from .windows import Aggregator


@dataclass
class Lane:
    """A domain's store, window clock and proof-id issuer."""

    domain: str | None
    store: Store
    aggregator: Aggregator
    reader: ProofReader
    issuer: ProofIdIssuer


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
        retry_max_seconds=s.anchor_retry_max_seconds,
        retention_seconds=None if s.retention_days is None else s.retention_days * 86400,
    )
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
        self._by_clock = {lane.store.clock_seq: lane for lane in self.all}
        if len(self._by_clock) != len(self.all):
            raise ConfigError("two lanes share a clock sequence; their proof ids could not be told apart")

    def domain(self, domain: str | None) -> Lane | None:
        """The lane of a domain (None: the v1 lane)."""
        return self._by_domain.get(domain)

    def by_id(self, ids: Sequence[tuple[str, int]]) -> Mapping[int, tuple[Lane, list[tuple[str, int]]]]:
        """Group parsed proof ids by their lane (ids of no lane are left out: they are simply not found)."""
        out: dict[int, tuple[Lane, list[tuple[str, int]]]] = {}
        for text, ticks in ids:
            clock = pid.parse_proof_id(text).clock_seq
            lane = self._by_clock.get(clock)
            if lane is not None:
                out.setdefault(clock, (lane, []))[1].append((text, ticks))
        return out
