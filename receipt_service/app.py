"""The HTTP API (aiohttp): submit hashes, fetch receipts, health, metrics, the ledger key."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from receipt_verifier import strict_json
from receipt_verifier.chainpoint import to_chainpoint_v4
from receipt_verifier.codec import json_type, receipt_to_dict
from receipt_verifier.errors import UsageError
from receipt_verifier.evidence import make_bundle
from receipt_verifier.ledger import raw_public_key
from receipt_verifier.model import FabricAnchor

from .access import EventSigner, add_routes
from .anchors import LocalLedgerBackend, iso_now
from .auth import Principal
from .domains import HOME_DOMAIN, check_domain, check_subject, may
from .errors import (
    ClientGoneError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    UnavailableError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from .lanes import Lane
from .memory import trim_every
from .metrics import CONTENT_TYPE
from .proofs import Located, WaitFor, parse_ids
from .service import SERVICE, Service, check_params, find_receipts, json_response, principal
from .stores.sqlite import sqlite_heap_bytes

log = logging.getLogger("receipt_service.app")

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://w3id.org/health-receipt/problems/"


# 250 proof ids in a query string are ~9.3 kB: above aiohttp's default 8190-byte request line.
MAX_LINE = 16384
OWN_GAUGES_SECONDS = 1.0  # how often a worker of serve --workers refreshes its own gauges for the others


def problem(status: int, title: str, detail: str, kind: str | None = None, **extra: Any) -> web.Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


def _matches(resource: web.AbstractResource, path: str) -> bool:
    """Whether a path fits a resource (for counting a 405 under its route)."""
    info = resource.get_info()
    if "path" in info:
        return bool(info["path"] == path)
    pattern = info.get("pattern")
    return bool(pattern is not None and pattern.fullmatch(path))


@web.middleware
async def problems_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error becomes problem+json; every answer is counted by route and status."""
    svc = request.app[SERVICE]
    resource = request.match_info.route.resource
    if resource is None and isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
        resource = next((r for r in request.app.router.resources() if r.get_info() and _matches(r, request.path)), None)
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except ClientGoneError as exc:  # nobody is listening: counted as 499, logged quietly, not an error
        log.info("%s %s: %s", request.method, request.path, exc)
        response = problem(exc.status, exc.title, str(exc))
    except ServiceError as exc:
        response = problem(exc.status, exc.title, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = svc.settings.max_body_bytes
        response = problem(413, "Payload too large", f"the body exceeds the limit of {limit} bytes")
    except web.HTTPMethodNotAllowed as exc:
        response = problem(
            405,
            "Method not allowed",
            f"{request.method} is not allowed here; use {', '.join(sorted(exc.allowed_methods))}",
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = problem(404, "Not found", f"no such endpoint: {request.path}; see /openapi.json")
    except web.HTTPException as exc:
        response = problem(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem(500, "Internal error", "the server failed; the request may be retried")
    svc.metrics.answered(route, response.status).inc()
    return response


# ---------------------------------------------------------------------- submit


async def _read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body; a client that stops sending gets 408, one that hangs up is noted, not an error."""
    try:
        if request.content.is_eof():  # it came with the headers: no timer to set
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeoutError(f"the body did not arrive within {timeout:g} s") from None
    except (ConnectionError, aiohttp.ClientPayloadError):
        raise ClientGoneError("the client closed the connection before its body was complete") from None


@dataclass(frozen=True)
class Placement:
    """Where a request's hashes go: a data-sharing domain and, optionally, a subject."""

    domain: str | None = None
    subject: str | None = None


_PLACEMENT_PARAMS = frozenset({"domain", "subject"})
_NOWHERE = Placement()  # no domain or subject named: the key's home domain, or v1


def _parse_json_hashes(body: bytes, limit: int) -> tuple[list[bytes], Placement]:
    try:
        doc = strict_json.loads(body)
    except (ValueError, RecursionError) as exc:
        why = f" ({exc})" if "duplicate key" in str(exc) else ""
        raise UnprocessableError(f'the body is not valid JSON{why}; send {{"hashes": ["<64 hex>", ...]}}') from None
    if not isinstance(doc, dict):
        raise UnprocessableError('the body must be a JSON object: {"hashes": [...]}')
    extra = sorted(set(doc) - {"hashes", "domain", "subject"})
    if extra:
        raise UnprocessableError(
            f"unknown field(s) {', '.join(map(repr, extra))}; the fields are 'hashes', 'domain' and 'subject'"
        )
    for name in ("domain", "subject"):
        if name in doc and type(doc[name]) is not str:
            raise UnprocessableError(f"{name} must be a string, got {json_type(doc[name])}")
    placement = Placement(doc.get("domain"), doc.get("subject"))
    items = doc.get("hashes")
    if not isinstance(items, list):
        raise UnprocessableError("'hashes' is required and must be a list of hex SHA-256 hashes")
    _check_count(len(items), limit)
    out = []
    for i, h in enumerate(items):
        if type(h) is not str:
            raise UnprocessableError(f"hashes[{i}] must be a string, got {json_type(h)}")
        if len(h) != 64:
            raise UnprocessableError(
                f"hashes[{i}] has {len(h)} character{'' if len(h) == 1 else 's'}; a SHA-256 hash is 64 hex characters"
            )
        try:
            b = bytes.fromhex(h)
        except ValueError:
            b = b""
        if len(b) != 32:
            raise UnprocessableError(f"hashes[{i}] is not hexadecimal: {h[:64]!r}")
        out.append(b)
    return out, placement


async def _lane_for(svc: Service, who: Principal, placement: Placement) -> Lane:
    """The lane a principal's submission goes to, by Table I (403 naming the rule otherwise)."""
    if who.role is None:
        if placement.domain is not None or placement.subject is not None:
            raise UnprocessableError(
                f"API key {who.key_id} has no role, so its hashes get v1 receipts without domain or subject;"
                " create a key with 'receipt-service keys create --role ...' to name them"
            )
        lane = svc.lanes.domain(None)
    else:
        if who.role not in HOME_DOMAIN:
            raise ForbiddenError(f"Table I: an {who.role} key is read-only and adds nothing")
        domain = placement.domain or HOME_DOMAIN[who.role]
        try:
            check_domain(domain)
            if placement.subject is not None:
                check_subject(placement.subject)
        except ValueError as exc:
            raise UnprocessableError(str(exc)) from None
        decision = may(who.role, "update", domain)
        if not decision.allowed:
            raise ForbiddenError(decision.rule)
        if placement.subject is not None:
            owner = await svc.store.subject_tenant(placement.subject)
            if owner is None or (who.role == "owner-app" and owner != who.tenant):
                raise UnprocessableError(
                    f"unknown subject {placement.subject}: the owner's app registers it first (POST /signing-keys)"
                )
        lane = svc.lanes.domain(domain)
    if lane is None:
        raise UnavailableError(f"this instance does not serve the domain {placement.domain!r}")
    return lane


def _check_count(n: int, limit: int) -> None:
    if n == 0:
        raise UnprocessableError(f"no hashes: send between 1 and {limit}")
    if n > limit:
        raise UnprocessableError(f"{n} hashes in one request; the limit is {limit} (split the batch)")


async def submit(request: web.Request) -> web.Response:
    """POST /hashes: store 1..N hashes durably, then answer with their proof ids."""
    svc = request.app[SERVICE]
    who = await principal(request, "submit")
    if svc.draining:
        raise UnavailableError("the service is shutting down and takes no new hashes; retry on another instance")
    s = svc.settings
    declared = request.content_length
    if declared is not None and declared > s.max_body_bytes:
        raise PayloadTooLargeError(f"the body is {declared} bytes; the limit is {s.max_body_bytes}")
    ctype = request.content_type if request.headers.get("Content-Type", "").strip() else None
    if ctype not in ("application/json", "application/octet-stream", None):
        raise UnsupportedMediaTypeError(
            f"content type {ctype!r} is not accepted; use application/json or application/octet-stream"
        )
    body = await _read_body(request, s.body_timeout_seconds)
    if ctype is None:  # no Content-Type: a JSON object starts with '{', raw hashes are anything
        if body.lstrip()[:1] != b"{":
            raise UnsupportedMediaTypeError(
                'no Content-Type: send application/json ({"hashes": [...]}) or application/octet-stream (raw hashes)'
            )
        ctype = "application/json"
    if len(body) > s.max_body_bytes:
        raise PayloadTooLargeError(f"the body is {len(body)} bytes; the limit is {s.max_body_bytes}")
    if ctype == "application/json":
        if request.query:
            raise UnprocessableError("with a JSON body, put domain and subject in the body, not the query string")
        hashes, placement = _parse_json_hashes(body, s.max_hashes_per_request)
        packed = b"".join(hashes)
    else:
        if request.query:
            check_params(request, _PLACEMENT_PARAMS)
            placement = Placement(request.query.get("domain"), request.query.get("subject"))
        else:
            placement = _NOWHERE
        if len(body) % 32:
            raise UnprocessableError(
                f"an octet-stream body is a concatenation of 32-byte hashes; {len(body)} bytes is not a multiple of 32"
            )
        _check_count(len(body) // 32, s.max_hashes_per_request)
        hashes = [body[i : i + 32] for i in range(0, len(body), 32)]
        packed = body  # already the hashes back to back
    lane = await _lane_for(svc, who, placement)
    svc.inflight_submits += 1
    try:
        # a fresh salt per hash (spec section 1)
        issued = await lane.store_hashes(who.tenant, hashes, packed, os.urandom(16 * len(hashes)), placement.subject)
    finally:
        svc.inflight_submits -= 1
    svc.metrics.hashes_accepted.inc(len(hashes))
    ready = iso_now(time.time_ns() + int((svc.settings.window_seconds + 0.2) * 1e9))
    # Every value is a UUID, hex or a timestamp (nothing to escape): joining strings is ~3x faster
    # than json.dumps on 1000 small objects, and this is the hot path.
    items = ",".join(
        f'{{"proof_id":"{p}","hash":"{h}","hash_received":"{r}"}}'
        for p, h, r in zip(issued.proof_ids, issued.hashes_hex, issued.hash_received, strict=True)
    )
    where = "" if lane.domain is None else f'"domain":"{lane.domain}",'
    if placement.subject is not None:
        where += f'"subject":"{placement.subject}",'  # checked against a pattern with nothing to escape
    text = (
        f'{{"hashes":[{items}],{where}"receipts_ready_at":"{ready}","window_seconds":{svc.settings.window_seconds!r}}}'
    )
    return web.Response(status=202, text=text, content_type="application/json")


# ---------------------------------------------------------------------- read

_SINGLE_PARAMS = frozenset({"format", "wait", "timeout", "evidence"})
_BATCH_PARAMS = frozenset({"ids", "format"})


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "receipt")
    if fmt not in ("receipt", "chainpoint-v4"):
        raise UnprocessableError(f"format {fmt[:40]!r} is unknown; use 'receipt' (default) or 'chainpoint-v4'")
    return fmt


def _render(found: Located, fmt: str) -> dict[str, Any]:
    if fmt == "chainpoint-v4":
        try:
            return to_chainpoint_v4(found.receipt)
        except UsageError as exc:
            raise ConflictError(f"{exc}; fetch it again once anchored (or use ?wait=anchored)") from None
    return receipt_to_dict(found.receipt)


async def get_proof(request: web.Request) -> web.Response:
    """GET /proofs/{proof_id}: one receipt, optionally waiting until it is aggregated or anchored."""
    svc = request.app[SERVICE]
    who = await principal(request, "read")
    check_params(request, _SINGLE_PARAMS)
    fmt = _format(request)
    ((text, ticks),) = parse_ids([request.match_info["proof_id"]])
    wait = request.query.get("wait")
    groups = list((await svc.lanes.by_id([(text, ticks)])).values())
    lane = groups[0][0] if groups else None
    if wait is None:
        found = None if lane is None else (await lane.reader.find(who.tenant, [(text, ticks)])).get(text)
    else:
        if wait not in ("aggregated", "anchored"):
            raise UnprocessableError(f"wait={wait[:40]!r} is unknown; use wait=aggregated or wait=anchored")
        timeout = _timeout(request.query.get("timeout", "30"), svc.settings.max_wait_seconds)
        until: WaitFor = "anchored" if wait == "anchored" else "aggregated"
        found = None if lane is None else await lane.reader.wait(who.tenant, text, ticks, until, timeout)
    if found is None:
        raise NotFoundError(f"no proof {text} for this API key's tenant")
    evidence = request.query.get("evidence")
    if evidence is None:
        return json_response(_render(found, fmt))
    if evidence != "embed" or fmt != "receipt":
        raise UnprocessableError("evidence=embed is the only evidence option, and only with the receipt format")
    fabric = [a for a in found.receipt.anchors() if isinstance(a, FabricAnchor)]
    blocks = await svc.evidence.evidence(fabric) if svc.evidence is not None and fabric else []
    return json_response(make_bundle(receipt_to_dict(found.receipt), blocks))


async def fabric_block(request: web.Request) -> web.Response:
    """GET /fabric/{channel}/blocks/{number}: a block exactly as the peers store it (evidence)."""
    svc = request.app[SERVICE]
    await principal(request, "read")
    check_params(request, frozenset())
    text = request.match_info["number"]
    if not text.isdigit() or len(text) > 19:
        raise UnprocessableError(f"block number {text[:40]!r} must be a non-negative integer")
    if svc.evidence is None:
        raise NotFoundError("this service does not anchor to Fabric")
    data = await svc.evidence.block(request.match_info["channel"], int(text))
    return web.Response(body=data, content_type="application/octet-stream")


def _timeout(text: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= limit:
        raise UnprocessableError(f"timeout={text[:40]!r} must be a number of seconds between 0 and {limit:g}")
    return value


async def get_proofs(request: web.Request) -> web.Response:
    """GET /proofs?ids=a,b,...: up to N receipts; ids not found are listed, not errors."""
    svc = request.app[SERVICE]
    who = await principal(request, "read")
    check_params(request, _BATCH_PARAMS, repeatable=frozenset({"ids"}))
    fmt = _format(request)
    raw = [p for v in request.query.getall("ids", []) for p in v.split(",") if p]
    if not raw:
        raise UnprocessableError("ids is required: /proofs?ids=<proof_id>,<proof_id>,...")
    limit = svc.settings.max_ids_per_request
    if len(raw) > limit:
        raise UnprocessableError(f"{len(raw)} ids in one request; the limit is {limit}")
    ids = list(dict.fromkeys(parse_ids(raw)))
    found = await find_receipts(svc, who.tenant, ids)
    receipts, not_found, not_anchored = [], [], []
    for text, _ in ids:
        if text not in found:
            not_found.append(text)
            continue
        try:
            receipts.append(_render(found[text], fmt))
        except ConflictError:  # a Chainpoint export asked for before any anchor exists
            not_anchored.append(text)
    return json_response({"receipts": receipts, "not_found": not_found, "not_anchored": not_anchored})


# ---------------------------------------------------------------------- operations


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: the store and every anchor backend answer."""
    svc = request.app[SERVICE]
    checks: dict[str, str] = {}
    failed = []
    for lane in svc.lanes.all:
        suffix = "" if lane.domain is None else f":{lane.domain}"
        try:
            await lane.store.ping()
            checks["store" + suffix] = "ok"
        except ServiceError as exc:
            checks["store" + suffix] = str(exc)
            failed.append("store" + suffix)
        if lane.aggregator.last_error is None:
            checks["windows" + suffix] = "ok"
        else:
            checks["windows" + suffix] = f"the last window could not be closed: {lane.aggregator.last_error}"
            failed.append("windows" + suffix)
    for b in svc.backends:
        try:
            await b.ready()
            checks[b.target] = "ok"
        except ServiceError as exc:
            checks[b.target] = str(exc)
            failed.append(b.target)
    if svc.draining:
        return problem(503, "Service unavailable", "the service is shutting down", "draining", checks=checks)
    if failed:
        return problem(503, "Service unavailable", f"not ready: {', '.join(failed)}", "not-ready", checks=checks)
    return json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    svc = request.app[SERVICE]
    every = [await lane.store.stats() for lane in svc.lanes.all]
    svc.metrics.backlog.set(sum(st.backlog for st in every))
    svc.metrics.open_anchors.set(sum(st.pending_anchors for st in every))
    svc.metrics.stored.set(sum(st.submissions for st in every))
    svc.metrics.wal.set(sum(st.wal_bytes for st in every))
    _own_gauges(svc)
    body = await asyncio.to_thread(svc.metrics.render)  # every metric, and under --workers every worker's file
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _own_gauges(svc: Service) -> None:
    """The gauges that are this process's own (a worker's, under ``serve --workers``)."""
    svc.metrics.leading.set(sum(lane.aggregator.leading for lane in svc.lanes.all))
    heap = sqlite_heap_bytes()
    if heap is not None:
        svc.metrics.sqlite_heap.set(heap)


async def _own_gauges_every(svc: Service, seconds: float) -> None:
    """Under ``serve --workers``: keep this worker's own gauges fresh for whichever worker renders them."""
    while True:
        _own_gauges(svc)
        await asyncio.sleep(seconds)


async def ledger_key(request: web.Request) -> web.Response:
    """GET /ledger/key: the local ledger's public key, for auditors to pin."""
    ledger = request.app[SERVICE].ledger()
    if ledger is None:
        raise NotFoundError("this instance has no local ledger configured")
    return json_response(ledger_key_doc(ledger))


def ledger_key_doc(backend: LocalLedgerBackend) -> dict[str, str]:
    """The public key document auditors pin (``receipt-verify --ledger-key`` takes it as is)."""
    return {
        "algorithm": "Ed25519",
        "key_id": backend.ledger.key_id,
        "public_key": raw_public_key(backend.ledger.public_key).hex(),
        "public_key_pem": backend.ledger.public_key_pem(),
    }


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API description shipped with the package."""
    text = resources.files("receipt_service").joinpath("openapi.json").read_text()
    return web.Response(text=text, content_type="application/json")


# ---------------------------------------------------------------------- app


def init_app(service: Service) -> web.Application:
    """The aiohttp application for a service (its aggregator starts and drains with the app)."""
    app = web.Application(middlewares=[problems_and_metrics], client_max_size=service.settings.max_body_bytes + 1024)
    app[SERVICE] = service
    app.router.add_post("/hashes", submit)
    app.router.add_get("/proofs/{proof_id}", get_proof)
    app.router.add_get("/proofs", get_proofs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ledger/key", ledger_key)
    app.router.add_get("/fabric/{channel}/blocks/{number}", fabric_block)
    app.router.add_get("/openapi.json", openapi)
    add_routes(app, EventSigner(service.settings.data_dir))
    app.on_startup.append(_start)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close)
    return app


async def _start(app: web.Application) -> None:
    svc = app[SERVICE]
    for lane in svc.lanes.all:
        await lane.aggregator.start()
    if svc.settings.memory_trim_seconds > 0:  # keeps RSS flat under steady load (memory.py)
        _background(svc, trim_every(svc.settings.memory_trim_seconds), "memory-trim")
    if svc.metrics.shared:
        _background(svc, _own_gauges_every(svc, OWN_GAUGES_SECONDS), "own-gauges")


def _background(svc: Service, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run ``work`` until the app's cleanup cancels it."""
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    svc.closers.append(stop)


async def _drain(app: web.Application) -> None:
    svc = app[SERVICE]
    svc.draining = True
    deadline = time.monotonic() + svc.settings.shutdown_grace_seconds
    while svc.inflight_submits and time.monotonic() < deadline:  # let accepted writes land in this window
        await asyncio.sleep(0.005)
    results = await asyncio.gather(
        *(lane.aggregator.drain(max(0.0, deadline - time.monotonic())) for lane in svc.lanes.all)
    )
    ok = all(results)
    if ok:
        log.info("drained: every window this instance led is closed and anchored")
    else:
        log.warning("shutdown grace ran out; open work is resumed at the next start")


async def _close(app: web.Application) -> None:
    svc = app[SERVICE]
    for backend in svc.backends:
        await backend.close()
    for close in svc.closers:
        await close()
    for lane in svc.lanes.all:
        await lane.store.close()
