"""Access events and queries (the paper's section III.C): signing keys, grants, receivers' reads.

Owners (through their app) and receivers register public keys; every grant, deny, revoke and
request is a signed access event, checked and anchored like a record; a receiver reads a subject's
receipts only under a current grant, and each such read is itself an ``access`` event that the
service signs with its event key and anchors.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier import strict_json
from receipt_verifier.access_event import (
    EVENT_TYPE,
    AccessEvent,
    jwk_public_key,
    parse_event,
    public_jwk,
    sign_event,
    thumbprint,
    verify_signature,
)
from receipt_verifier.codec import receipt_to_dict
from receipt_verifier.errors import EventSignatureError, MalformedEventError

from .anchors import iso_now
from .auth import Principal
from .domains import RECEIVERS, Access, check_domain, check_subject, may
from .errors import ConflictError, ForbiddenError, NotFoundError, UnprocessableError
from .fhir import access_bundle
from .history import history_bundle, parse_as_of
from .lanes import Lane
from .ledger import load_or_create_key
from .proofs import parse_ids
from .service import SERVICE, Service, check_params, find_receipts, json_response, principal
from .stores.base import EventRecord, SigningKeyRecord

EVENT_KEY_FILE = "event-key.pem"
MAX_SKEW = timedelta(minutes=5)  # an event's time must be this close to the service's clock
MAX_BODY = 16 * 1024


class EventSigner:
    """The service's Ed25519 key for the ``access`` events it records itself (reads by receivers)."""

    def __init__(self, data_dir: Path) -> None:
        self._key: Ed25519PrivateKey = load_or_create_key(data_dir, EVENT_KEY_FILE)
        self.jwk = public_jwk(self._key.public_key())
        self.key_id = thumbprint(self._key.public_key())

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with its ``key_id`` and ``signature`` (over the RFC 8785 form without ``signature``)."""
        return sign_event(self._key, doc)


SIGNER = web.AppKey("event_signer", EventSigner)


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise UnprocessableError("send the body as application/json")
    data = await request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise UnprocessableError(f"the body is over {MAX_BODY} bytes")
    try:
        return strict_json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UnprocessableError(f"the body is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------- keys


async def register_key(request: web.Request) -> web.Response:
    """POST /signing-keys: an owner-app registers a subject with its owner's key; a receiver its own key."""
    svc = request.app[SERVICE]
    who = await principal(request, "submit")
    check_params(request, frozenset())
    body = await _body(request)
    if not isinstance(body, dict) or "jwk" not in body or set(body) - {"jwk", "subject"}:
        raise UnprocessableError('send {"jwk": {...public JWK...}} (an owner-app adds "subject")')
    try:
        key = jwk_public_key(body["jwk"])
    except MalformedEventError as exc:
        raise UnprocessableError(str(exc)) from None
    kid = thumbprint(key)
    jwk = public_jwk(key)
    created = iso_now()
    if who.role == "owner-app":
        subject = body.get("subject")
        if not isinstance(subject, str):
            raise UnprocessableError('an owner-app registers a key for one of its subjects: add "subject"')
        try:
            check_subject(subject)
        except ValueError as exc:
            raise UnprocessableError(str(exc)) from None
        await svc.store.register_subject(
            subject, who.tenant, SigningKeyRecord(kid, subject, who.tenant, json.dumps(jwk), created)
        )
        party = subject
    elif who.role in RECEIVERS:
        if "subject" in body:
            raise UnprocessableError(f'a {who.role} registers its own key (party {who.tenant}); leave out "subject"')
        await svc.store.add_signing_key(SigningKeyRecord(kid, who.tenant, who.tenant, json.dumps(jwk), created))
        party = who.tenant
    else:
        raise ForbiddenError("only owner-app, provider and insurer keys register signing keys")
    return json_response({"key_id": kid, "party": party, "jwk": jwk}, status=201)


async def get_signing_key(request: web.Request) -> web.Response:
    """GET /signing-keys/{key_id}: a registered public key (``service``: the service's event key)."""
    svc = request.app[SERVICE]
    await principal(request, "read")
    check_params(request, frozenset())
    key_id = request.match_info["key_id"]
    if key_id == "service":
        signer = request.app[SIGNER]
        return json_response({"key_id": signer.key_id, "party": "service", "jwk": signer.jwk})
    record = await svc.store.get_signing_key(key_id)
    if record is None:
        raise NotFoundError(f"no signing key {key_id[:64]!r}")
    return json_response({"key_id": record.key_id, "party": record.party, "jwk": json.loads(record.jwk)})


# ---------------------------------------------------------------------- events


async def post_event(request: web.Request) -> web.Response:
    """POST /access-events: check a signed event against Table I, the keys and the grants; anchor it."""
    svc = request.app[SERVICE]
    who = await principal(request, "submit")
    check_params(request, frozenset())
    try:
        event = parse_event(await _body(request))
        check_domain(event.domain)
    except (MalformedEventError, ValueError) as exc:
        raise UnprocessableError(str(exc)) from None
    owner_tenant = await svc.store.subject_tenant(event.owner)
    if event.signer == "owner":
        if who.role != "owner-app" or owner_tenant != who.tenant:
            raise ForbiddenError(
                f"a {event.action} is the owner's: only the app that registered subject {event.owner} posts it"
            )
    elif who.role not in RECEIVERS or who.tenant != event.receiver:
        raise ForbiddenError(f"a {event.action} event is posted by its receiver ({event.receiver}) with its own key")
    if owner_tenant is None:
        raise UnprocessableError(f"unknown owner {event.owner}: the owner's app registers the subject first")
    await check_event(svc, event)
    if await svc.store.seen_event(event.replay_id()):
        raise ConflictError("this event was already recorded (a replay); sign a new event with a new time")
    proof_id = await anchor_hash(svc, _lane(svc, event.domain), who.tenant, bytes.fromhex(event.event_hash()))
    if not await svc.store.add_event(_record(event, proof_id, who.tenant)):
        raise ConflictError("this event was already recorded (a replay); sign a new event with a new time")
    return json_response(
        {"event_hash": event.event_hash(), "proof_id": proof_id, "receipt": f"/proofs/{proof_id}"}, status=201
    )


async def check_event(svc: Service, event: AccessEvent) -> None:
    """Signature by the registered key of the right party, current time, future expiry, known record."""
    party = event.owner if event.signer == "owner" else event.receiver
    record = await svc.store.get_signing_key(event.key_id)
    if record is None or record.party != party:
        raise UnprocessableError(
            f"unknown key {event.key_id} for {party}: a {event.action} is signed with a key {party} registered"
            " (POST /signing-keys)"
        )
    try:
        verify_signature(event, jwk_public_key(json.loads(record.jwk)))
    except EventSignatureError as exc:
        raise UnprocessableError(str(exc)) from None
    now = _now()
    if abs(now - event.time) > MAX_SKEW:
        raise UnprocessableError(
            f"time {_stamp(event.time)} is more than {MAX_SKEW.seconds // 60} minutes from the service's clock"
            f" ({_stamp(now)}); sign the event when you send it"
        )
    if event.expirydate is not None and event.expirydate <= now:
        raise UnprocessableError(f"expirydate {_stamp(event.expirydate)} is in the past")
    if event.recordhash is not None and not await _lane(svc, event.domain).store.has_record(
        event.owner, bytes.fromhex(event.recordhash)
    ):
        days = svc.settings.retention_days
        why = "" if days is None else f", or its receipts passed the retention period ({days:g} days) and were removed"
        raise UnprocessableError(
            f"unknown record {event.recordhash}: not a record of {event.owner} in {event.domain}{why}"
        )


def _lane(svc: Service, domain: str) -> Lane:
    lane = svc.lanes.domain(domain)
    if lane is None:
        raise UnprocessableError(f"this instance does not serve the domain {domain!r}")
    return lane


def _record(event: AccessEvent, proof_id: str, tenant: str) -> EventRecord:
    return EventRecord(
        event.replay_id(),
        event.event_hash(),
        event.owner,
        event.receiver,
        event.domain,
        event.action,
        _stamp(event.time),
        None if event.expirydate is None else _stamp(event.expirydate),
        json.dumps(dict(event.doc), separators=(",", ":")),
        proof_id,
        tenant,
    )


async def anchor_hash(svc: Service, lane: Lane, tenant: str, digest: bytes) -> str:
    """Store one hash durably in a lane (it is anchored with the next window); its proof id."""
    issued = await lane.store_hashes(tenant, [digest], digest, os.urandom(16))
    svc.metrics.hashes_accepted.inc()
    return issued.proof_ids[0]


# ---------------------------------------------------------------------- queries


async def query_access(svc: Service, who: Principal, subject: str, domain: str) -> Access:
    """Table I "Query": the owner's app always (``own``); a provider or insurer only under a current
    grant (``grant``, and its read is then recorded)."""
    if who.role is None:
        raise ForbiddenError("a key without a role reads only the receipts of its own submissions (/proofs)")
    decision = may(who.role, "query", domain)
    if not decision.allowed:
        raise ForbiddenError(decision.rule + "; an auditor reads access events (/subjects/{subject}/access-events)")
    if decision.access == "own":
        if await svc.store.subject_tenant(subject) != who.tenant:
            raise NotFoundError(f"no subject {subject} for this app")
        return "own"
    last = await svc.store.last_decision(subject, who.tenant, domain)
    why = f"no grant from the owner of {subject} covers {who.tenant} in {domain}"
    if last is None:
        raise ForbiddenError(why + " (the owner has not granted access)")
    if last.action != "grant":
        raise ForbiddenError(why + f" (the owner's latest decision is a {last.action} of {last.time})")
    if last.expiry is not None and datetime.fromisoformat(last.expiry) <= _now():
        raise ForbiddenError(why + f" (the grant expired at {last.expiry})")
    return "grant"


async def subject_receipts(request: web.Request) -> web.Response:
    """GET /subjects/{subject}/receipts?domain=D: a subject's receipts in a domain, in log order."""
    svc = request.app[SERVICE]
    who = await principal(request, "read")
    check_params(request, frozenset({"domain", "after", "limit"}))
    subject, domain = _subject_and_domain(request)
    after = _int_param(request, "after", -1, -1, 2**53)
    limit = _int_param(request, "limit", svc.settings.max_ids_per_request, 1, svc.settings.max_ids_per_request)
    access = await query_access(svc, who, subject, domain)
    lane = _lane(svc, domain)
    out: dict[str, Any] = {"subject": subject, "domain": domain}
    if access == "grant":  # "every data request and the corresponding data access is recorded"
        out["access_event"] = await record_read(svc, request, who, subject, domain)
    records = await lane.store.subject_records(subject, after, limit)
    ids = [(r.to_submission(domain).proof_id, r.ticks) for r in records]
    found = await lane.reader.find(None, ids)
    out["receipts"] = [receipt_to_dict(found[text].receipt) for text, _ in ids if text in found]
    out["next_after"] = records[-1].log_pos if len(records) == limit else None
    return json_response(out)


async def subject_history(request: web.Request) -> web.Response:
    """GET /subjects/{subject}/history?domain=D[&as_of=T]: the history bundle (spec section 14)."""
    svc = request.app[SERVICE]
    who = await principal(request, "read")
    check_params(request, frozenset({"domain", "as_of"}))
    subject, domain = _subject_and_domain(request)
    as_of = parse_as_of(request.query.get("as_of"))
    access = await query_access(svc, who, subject, domain)
    bundle = await history_bundle(_lane(svc, domain), subject, as_of, svc.evidence)
    if access == "grant":  # the read is recorded like every receiver's read
        await record_read(svc, request, who, subject, domain)
    return json_response(bundle)


async def record_read(svc: Service, request: web.Request, who: Principal, subject: str, domain: str) -> dict[str, Any]:
    """Sign and anchor an ``access`` event for a receiver's read; returns it with its proof id."""
    signer = request.app[SIGNER]
    now = _now()
    doc = signer.sign(
        {
            "type": EVENT_TYPE,
            "action": "access",
            "domain": domain,
            "recordhash": None,
            "owner": subject,
            "receiver": who.tenant,
            "time": _stamp(now),
            "location": request.path_qs[:256],
            "expirydate": None,
        }
    )
    event = parse_event(doc)
    proof_id = await anchor_hash(svc, _lane(svc, domain), who.tenant, bytes.fromhex(event.event_hash()))
    await svc.store.add_event(_record(event, proof_id, who.tenant))
    return {"event": doc, "event_hash": event.event_hash(), "proof_id": proof_id}


async def subject_events(request: web.Request) -> web.Response:
    """GET /subjects/{subject}/access-events[?format=fhir]: every access event of a subject, with receipts."""
    svc = request.app[SERVICE]
    who = await principal(request, "read")
    check_params(request, frozenset({"format"}))
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "fhir"):
        raise UnprocessableError(f"format {fmt[:40]!r} is unknown; use json (default) or fhir")
    subject = request.match_info["subject"]
    owner = await svc.store.subject_tenant(subject)
    if who.role != "auditor" and (who.role != "owner-app" or owner != who.tenant):
        if who.role == "owner-app" or owner is None:
            raise NotFoundError(f"no subject {subject} for this app")
        raise ForbiddenError("access events are read by the subject's owner-app and by auditors")
    records = await svc.store.events(subject)
    found = await find_receipts(svc, None, parse_ids([r.proof_id for r in records]))
    items = [
        {
            "event": json.loads(r.doc),
            "event_hash": r.event_hash,
            "proof_id": r.proof_id,
            "receipt": receipt_to_dict(found[r.proof_id].receipt) if r.proof_id in found else None,
        }
        for r in records
    ]
    if fmt == "fhir":
        doc = access_bundle(subject, items, _stamp(_now()))
        return web.Response(text=json.dumps(doc), content_type="application/fhir+json")
    return json_response({"subject": subject, "events": items})


def _subject_and_domain(request: web.Request) -> tuple[str, str]:
    """The path's subject and the required ``domain`` query parameter, both checked (422 otherwise)."""
    subject, domain = request.match_info["subject"], request.query.get("domain")
    if domain is None:
        raise UnprocessableError(f"domain is required: {request.path}?domain=medical-history")
    try:
        return check_subject(subject), check_domain(domain)
    except ValueError as exc:
        raise UnprocessableError(str(exc)) from None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise UnprocessableError(f"{name}={text[:40]!r} must be an integer between {lo} and {hi}")
    return value


def add_routes(app: web.Application, signer: EventSigner) -> None:
    """The health-model routes."""
    app[SIGNER] = signer
    app.router.add_post("/signing-keys", register_key)
    app.router.add_get("/signing-keys/{key_id}", get_signing_key)
    app.router.add_post("/access-events", post_event)
    app.router.add_get("/subjects/{subject}/receipts", subject_receipts)
    app.router.add_get("/subjects/{subject}/access-events", subject_events)
    app.router.add_get("/subjects/{subject}/history", subject_history)
