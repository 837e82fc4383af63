"""What every HTTP handler shares: the running service, the caller, JSON answers, query checks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .anchors import AnchorBackend, LocalLedgerBackend
from .auth import Authenticator, Principal
from .config import Settings
from .errors import UnauthorizedError, UnprocessableError
from .fabric.evidence import BlockCache
from .lanes import Lanes, domain_backends, make_lane
from .metrics import Metrics
from .proofs import Located
from .stores.base import Store


@dataclass
class Service:
    """One running instance: settings, store, aggregator and the rest, shared by handlers."""

    settings: Settings
    store: Store
    backends: Sequence[AnchorBackend]
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    inflight_submits: int = 0
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run at shutdown
    evidence: BlockCache | None = None  # Fabric blocks, when Fabric is configured
    domain_stores: Mapping[str, Store] = field(default_factory=dict)  # one lane per data-sharing domain

    def __post_init__(self) -> None:
        s = self.settings
        v1 = make_lane(None, self.store, self.backends, s, self.metrics)
        self.lanes = Lanes(
            [v1]
            + [
                make_lane(d, st, domain_backends(d, s, self.backends), s, self.metrics)
                for d, st in self.domain_stores.items()
            ]
        )
        self.aggregator = v1.aggregator  # the v1 lane (keys without a role)
        self.reader = v1.reader
        self.issuer = v1.issuer
        self.auth = Authenticator(self.store, s.key_cache_seconds)

    def ledger(self) -> LocalLedgerBackend | None:
        """The local ledger backend, if configured."""
        return next((b for b in self.backends if isinstance(b, LocalLedgerBackend)), None)


SERVICE = web.AppKey("service", Service)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A compact JSON answer."""
    return web.Response(status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json")


def check_params(request: web.Request, allowed: frozenset[str], repeatable: frozenset[str] = frozenset()) -> None:
    """Refuse unknown and repeated query parameters (422 naming them)."""
    if not request.query:
        return
    extra = sorted(set(request.query) - allowed)
    if extra:
        raise UnprocessableError(
            f"unknown query parameter(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )
    twice = sorted(k for k in set(request.query) - repeatable if len(request.query.getall(k)) > 1)
    if twice:
        raise UnprocessableError(f"query parameter(s) {', '.join(twice)} given more than once")
    if "timeout" in request.query and "wait" not in request.query:
        raise UnprocessableError("timeout only applies with wait=aggregated or wait=anchored")


async def find_receipts(svc: Service, tenant: str | None, ids: Sequence[tuple[str, int]]) -> dict[str, Located]:
    """Receipts of ``tenant`` (None: of any tenant) for these ids, from whichever lane issued each."""
    out: dict[str, Located] = {}
    for lane, group in (await svc.lanes.by_id(ids)).values():
        out.update(await lane.reader.find(tenant, group))
    return out


async def principal(request: web.Request, scope: str) -> Principal:
    """The caller behind the request's API key, which must have ``scope``."""
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError(
                "the Authorization header must use the Bearer scheme: 'Authorization: Bearer hrk_...'"
            )
        return await request.app[SERVICE].auth.authenticate(token.strip(), scope)
    return await request.app[SERVICE].auth.authenticate(request.headers.get("X-API-Key"), scope)
