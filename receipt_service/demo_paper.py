"""``receipt-service demo --scenario paper``: the seed paper's story on a real service, checked offline.

A patient's wearable app, a clinic and an insurer (Liang et al., PIMRC 2017, section III.C): data is
synced, a treatment recorded, the insurer asks, the owner grants, the insurer reads, the owner
revokes, the insurer is refused. Every record and every access event is anchored, and at the end
every receipt and every event signature is verified offline with pinned keys only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier._progress import table
from receipt_verifier.access_event import (
    jwk_public_key,
    parse_event,
    public_jwk,
    sign_event,
    thumbprint,
    verify_signature,
)
from receipt_verifier.errors import Error
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id, load_public_key

from .auth import make_key
from .config import load_settings
from .domains import Role
from .server import serve
from .stores.sqlite import SQLiteStore

PATIENT_ID = "patient-0042"  # the app's own id: never sent; the service sees only its HMAC
APP_SECRET = b"wearco demo pseudonym key"

RECORDS = {
    "personal-health": [
        b'{"type":"heart_rate","bpm":72,"device":"wrist-01"}',
        b'{"type":"steps","count":1043,"device":"wrist-01"}',
        b'{"type":"sleep","minutes":431,"device":"ring-07"}',
    ],
    "medical-history": [
        b'{"type":"diagnosis","code":"J02.9","text":"acute pharyngitis"}',
        b'{"type":"treatment","drug":"amoxicillin 500 mg","days":7}',
    ],
    "insurance": [b'{"type":"quote_request","product":"health-basic","year":2026}'],
}


class Signer:
    """An Ed25519 or P-256 key that signs access events."""

    def __init__(self, p256: bool = False) -> None:
        self.key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if p256 else Ed25519PrivateKey.generate()
        )
        self.jwk = public_jwk(self.key.public_key())
        self.key_id = thumbprint(self.key.public_key())

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with ``key_id`` and ``signature``."""
        return sign_event(self.key, doc)


def _event(action: str, owner: str, receiver: str, domain: str, days: int | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return {
        "type": "AccessEvent",
        "action": action,
        "domain": domain,
        "recordhash": None,
        "owner": owner,
        "receiver": receiver,
        "time": now.strftime(fmt),
        "location": None,
        "expirydate": None if days is None else (now + timedelta(days=days)).strftime(fmt),
    }


class DemoFailed(Error):
    """A step of the scenario did not answer as the paper's model says it must."""


async def run_paper(
    data_dir: Path,
    print_: Callable[[str], None] = print,
    config: Path | None = None,
    trust: dict[str, Any] | None = None,
) -> int:
    """Run the scenario against a service on ``data_dir``; 0 when every check passed. With ``config`` (a
    service config that anchors on Fabric) and ``trust`` (the channels' trust file), every receipt is
    fetched with its Fabric evidence and checked under the trust file, and the insurer checks the
    patient's whole medical history offline."""
    store = SQLiteStore(data_dir)
    tokens = {}
    try:
        parties: list[tuple[str, Role]] = [
            ("wearco", "owner-app"),
            ("clinic", "provider"),
            ("insurer", "insurer"),
            ("audit", "auditor"),
        ]
        for name, role in parties:
            key = make_key(name, frozenset({"read"} if role == "auditor" else {"submit", "read"}), role)
            store.create_api_key(key.record)
            tokens[name] = key.token
    finally:
        store.close_sync()
    overrides = {"data_dir": data_dir, "port": 0, "host": "127.0.0.1", "window_seconds": 0.5}
    settings = load_settings(config, environ={}, overrides=overrides)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(settings, ready=port.set_result, stop=stop))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(asyncio.shield(port), 30)}"
        async with aiohttp.ClientSession(base) as http:
            lane_prefix = settings.fabric.chain_prefix if settings.fabric is not None else ""
            return await _story(http, tokens, print_, trust, lane_prefix)
    finally:
        stop.set()
        await server


async def _story(
    http: aiohttp.ClientSession,
    tokens: dict[str, str],
    print_: Callable[[str], None],
    trust: dict[str, Any] | None = None,
    lane_prefix: str = "",
) -> int:
    subject = "hmac-sha256:" + hmac.new(APP_SECRET, PATIENT_ID.encode(), hashlib.sha256).hexdigest()[:32]
    owner, clinic, insurer = Signer(), Signer(p256=True), Signer()
    steps: list[list[str]] = []
    records: dict[str, bytes] = {}  # proof id -> record
    events: list[dict[str, Any]] = []  # {"event", "proof_id"}

    async def call(who: str, method: str, path: str, body: Any, want: int, step: str) -> Any:
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        async with http.request(method, path, json=body, headers=headers) as resp:
            doc = await resp.json(content_type=None)
            if resp.status != want:
                raise DemoFailed(f"{step}: {method} {path} answered {resp.status}, expected {want}: {doc}")
        detail = doc.get("detail", "") if isinstance(doc, dict) else ""
        detail = detail.rsplit(" (", 1)[-1].rstrip(")")  # the reason, without the subject's long pseudonym
        steps.append([str(len(steps) + 1), who, step, str(resp.status), detail[:70]])
        return doc

    async def anchored(proof_id: str, who: str) -> dict[str, Any]:
        """The receipt once every anchor is done (with its Fabric blocks when Fabric is on)."""
        params = {"wait": "anchored", "timeout": "60"}
        async with http.get(
            f"/proofs/{proof_id}", params=params, headers={"Authorization": f"Bearer {tokens[who]}"}
        ) as resp:
            if resp.status != 200:
                raise DemoFailed(f"receipt {proof_id}: {resp.status} {await resp.text()}")
        if trust is not None:
            params = {"evidence": "embed"}
        async with http.get(
            f"/proofs/{proof_id}", params=params, headers={"Authorization": f"Bearer {tokens[who]}"}
        ) as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    await call(
        "wearco",
        "POST",
        "/signing-keys",
        {"jwk": owner.jwk, "subject": subject},
        201,
        "patient's app registers the pseudonym and owner key",
    )
    await call("clinic", "POST", "/signing-keys", {"jwk": clinic.jwk}, 201, "clinic registers its key (ES256)")
    await call("insurer", "POST", "/signing-keys", {"jwk": insurer.jwk}, 201, "insurer registers its key (Ed25519)")
    for who, domain, what in [
        ("wearco", "personal-health", "wearable data synced"),
        ("clinic", "medical-history", "treatment recorded"),
        ("insurer", "insurance", "quote request filed"),
    ]:
        body = {
            "hashes": [hashlib.sha256(r).hexdigest() for r in RECORDS[domain]],
            "subject": subject,
            "domain": domain,
        }
        ack = await call(who, "POST", "/hashes", body, 202, f"{what} ({len(RECORDS[domain])} hashes, {domain})")
        for item, record in zip(ack["hashes"], RECORDS[domain], strict=True):
            records[item["proof_id"]] = record
    read = f"/subjects/{subject}/receipts?domain=medical-history"
    await call("insurer", "GET", read, None, 403, "insurer reads the medical history: refused, no grant")
    ev = insurer.sign(_event("request", subject, "insurer", "medical-history"))
    events.append(
        {"event": ev, **await call("insurer", "POST", "/access-events", ev, 201, "insurer asks for it (request)")}
    )
    ev = owner.sign(_event("grant", subject, "insurer", "medical-history", days=30))
    events.append(
        {"event": ev, **await call("wearco", "POST", "/access-events", ev, 201, "owner grants it for 30 days")}
    )
    doc = await call("insurer", "GET", read, None, 200, "insurer reads the medical history")
    if len(doc["receipts"]) != len(RECORDS["medical-history"]):
        raise DemoFailed("the insurer did not get every medical-history receipt")
    events.append({"event": doc["access_event"]["event"], "proof_id": doc["access_event"]["proof_id"]})
    history = None
    if trust is not None:  # the insurer takes the whole history, with Fabric evidence, while it may
        for proof_id in [p for p, r in records.items() if r in RECORDS["medical-history"]]:
            await anchored(proof_id, "clinic")
        history = await call(
            "insurer",
            "GET",
            f"/subjects/{subject}/history?domain=medical-history",
            None,
            200,
            "insurer fetches the medical history as a bundle",
        )
    ev = owner.sign(_event("revoke", subject, "insurer", "medical-history"))
    events.append({"event": ev, **await call("wearco", "POST", "/access-events", ev, 201, "owner revokes the grant")})
    await call("insurer", "GET", read, None, 403, "insurer reads again: refused, revoked")
    fhir = await call(
        "audit", "GET", f"/subjects/{subject}/access-events?format=fhir", None, 200, "auditor fetches the log (FHIR)"
    )
    print_(table(["#", "who", "step", "HTTP", "detail"], steps))
    print_(
        f"FHIR Bundle: {len(fhir['entry'])} resources ({', '.join(sorted({e['resource']['resourceType'] for e in fhir['entry']}))})"
    )

    # every receipt, once anchored, checked offline with pinned keys only
    t0 = time.perf_counter()
    async with http.get("/ledger/key") as resp:
        ledger_key = load_public_key(await resp.read())
    channels = load_trust(trust) if trust is not None else None
    verifier = Verifier([ledger_key], fabric_trust=channels)
    async with http.get("/signing-keys/service", headers={"Authorization": f"Bearer {tokens['audit']}"}) as resp:
        service_key = (await resp.json())["jwk"]
    pinned = {
        thumbprint(jwk_public_key(j)): jwk_public_key(j) for j in (owner.jwk, clinic.jwk, insurer.jwk, service_key)
    }
    owner_of = {"personal-health": "wearco", "medical-history": "clinic", "insurance": "insurer"}
    rows = []
    fabric_rows: list[dict[str, Any]] = []  # what each verified Fabric anchor's evidence showed
    for proof_id, record in records.items():
        who = next(w for d, w in owner_of.items() if record in RECORDS[d])
        receipt = await anchored(proof_id, who)
        result = verifier.verify_policy(receipt, AnchorPolicy(), record=record)
        fabric_rows += [dict(a.details) for a in result.anchors if a.type == "fabric"]
        r = receipt.get("receipt", receipt)  # an evidence bundle holds the receipt beside its blocks
        rows.append(["record", r["domain"], f"#{r['subject_seq']}", proof_id[:13] + "…", _status(result)])
    for item in events:
        event = parse_event(item["event"])
        verify_signature(event, pinned[event.key_id])
        poster = "wearco" if event.action in ("grant", "revoke") else "insurer"
        receipt = await anchored(item["proof_id"], poster)
        result = verifier.verify_policy(receipt, AnchorPolicy(), record_hash=event.event_hash())
        fabric_rows += [dict(a.details) for a in result.anchors if a.type == "fabric"]
        signer = {owner.key_id: "owner", insurer.key_id: "insurer", clinic.key_id: "clinic"}.get(
            event.key_id, "service"
        )
        rows.append(
            [
                f"{event.action} event",
                event.domain,
                f"signed by {signer}: ok",
                item["proof_id"][:13] + "…",
                _status(result),
            ]
        )
    pins = "pinned ledger key, JWKs" + (" and the Fabric trust file" if channels is not None else "")
    print_(f"\nchecked offline ({pins} only):")
    print_(table(["what", "domain", "binding / signature", "proof_id", "anchors"], rows))
    print_(f"\nall {len(rows)} receipts anchored and verified ({time.perf_counter() - t0:.1f} s after the last step)")
    print_(f"subject {subject} is HMAC-SHA256(app key, {PATIENT_ID!r}): the service never saw the patient id")
    if history is not None and channels is not None:
        _insurer_checks(history, ledger_key, channels, fabric_rows, lane_prefix, print_)
    return 0


def _insurer_checks(
    history: dict[str, Any],
    ledger_key: Any,
    channels: dict[str, Any],
    fabric_rows: list[dict[str, Any]],
    lane_prefix: str,
    print_: Callable[[str], None],
) -> None:
    """The insurer's offline check of the medical history, under the trust file alone, and what was proven."""
    lane = f"{lane_prefix}.medical-history" if lane_prefix else "medical-history"
    report, _ = verify_history(history, {key_id(ledger_key): ledger_key}, fabric_trust=channels, lane=lane)
    if not report.complete:
        raise DemoFailed(f"the insurer's history check failed: {'; '.join(report.problems)}")
    print_("\nthe insurer checks the patient's medical history offline (trust file from `peer channel fetch config`):")
    for label, value in (
        ("complete", f"all {report.size} records of the subject's log, none hidden (window {report.window_id})"),
        ("append-only", report.append_only),
        ("committed", report.committed or "-"),
        ("anchored", str(report.anchor)),
    ):
        print_(f"  {label:12} {value}")
    blocks = sorted({(d["channel"], d["block_number"]) for d in fabric_rows})
    endorsers = sorted({e.split(":")[0] for d in fabric_rows for e in d["endorsers"]})
    orderers = sorted({o.split(":")[0] for d in fabric_rows for o in d["orderers"]})
    print_(
        f"proven on Fabric: {len(fabric_rows)} anchors (each domain's roots on its own channel) in {len(blocks)}"
        f" blocks of {len({c for c, _ in blocks})} channels ({', '.join(sorted({c for c, _ in blocks}))});"
        f" endorsed by {', '.join(endorsers)}; blocks signed by {', '.join(orderers)}"
    )


def _status(result: Any) -> str:
    return ", ".join(f"{a.type} {a.status.value}" for a in result.anchors)
