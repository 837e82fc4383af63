"""Access events through HTTP: keys, grants, expiry and revocation, forged and replayed events, FHIR."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle

from receipt_service.domains import DOMAINS, TABLE_I
from receipt_verifier import Verifier
from receipt_verifier._cli import main as verify_main
from receipt_verifier.access_event import b64url, b64url_decode, jwk_public_key, parse_event, verify_signature

from .conftest import Factory, World, openapi_validate
from .parties import SUBJECT, Party, event, stamp

ROLE_KEY = {"owner-app": "app", "provider": "provider", "insurer": "payer", "auditor": "auditor"}
TENANT = {"provider": "clinic-x", "payer": "insure-y"}


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_the_papers_story(world: World) -> None:
    env = world.env
    items = await env.client.post(
        "/hashes", json={"hashes": [_h("visit 1"), _h("visit 2")], "subject": SUBJECT}, headers=env.auth("provider")
    )
    assert items.status == 202
    status, body = await world.read("payer", "medical-history")
    assert status == 403 and "has not granted" in body["detail"]
    req = world.insurer.sign(event("request", SUBJECT, "insure-y", "medical-history", location="quote 42"))
    assert (await world.post("/access-events", req, "payer"))[0] == 201
    status, body = await world.grant("insure-y", "medical-history", expires_in=timedelta(hours=1))
    assert status == 201, body
    openapi_validate(body, "EventAccepted")
    status, body = await world.read("payer", "medical-history")
    assert status == 200, body
    openapi_validate(body, "SubjectReceipts")
    assert [r["subject_seq"] for r in body["receipts"]] == [0, 1]
    assert body["access_event"]["event"]["action"] == "access"  # the read itself is recorded
    assert (await world.read("payer", "insurance"))[0] == 403  # the grant covers one domain
    assert (await world.read("provider", "medical-history"))[0] == 403  # and one receiver
    assert (await world.revoke("insure-y", "medical-history"))[0] == 201
    status, body = await world.read("payer", "medical-history")
    assert status == 403 and "revoke" in body["detail"]  # immediately
    status, body = await world.get(f"/subjects/{SUBJECT}/access-events", "app")
    assert status == 200
    assert [e["event"]["action"] for e in body["events"]] == ["request", "grant", "access", "revoke"]
    openapi_validate(body, "SubjectEvents")


async def test_a_grant_expires(world: World) -> None:
    expiry = datetime.now(UTC) + timedelta(seconds=3)  # room for a slow machine before the first read
    status, body = await world.grant("clinic-x", "personal-health", expires_in=expiry - datetime.now(UTC))
    assert status == 201, body
    assert (await world.read("provider", "personal-health"))[0] == 200
    await asyncio.sleep((expiry - datetime.now(UTC)).total_seconds() + 0.1)
    status, body = await world.read("provider", "personal-health")
    assert status == 403 and "expired" in body["detail"]


async def test_a_deny_after_a_grant_closes_access(world: World) -> None:
    assert (await world.grant("clinic-x", "insurance"))[0] == 201
    assert (await world.read("provider", "insurance"))[0] == 200
    deny = world.owner.sign(event("deny", SUBJECT, "clinic-x", "insurance"))
    assert (await world.post("/access-events", deny, "app"))[0] == 201
    assert (await world.read("provider", "insurance"))[0] == 403


async def test_an_event_naming_a_record_that_retention_removed_is_refused(make_env: Factory) -> None:
    world = World(await make_env(retention_days=2e-5))  # 1.7 s
    await world.setup()
    record = _h("visit 1")
    resp = await world.env.client.post(
        "/hashes", json={"hashes": [record], "subject": SUBJECT}, headers=world.env.auth("provider")
    )
    assert resp.status == 202
    proof_id = (await resp.json())["hashes"][0]["proof_id"]
    domain = "medical-history"
    status, body = await world.grant("insure-y", domain, recordhash=record)
    assert status == 201, body
    seen = []
    for _ in range(100):
        seen.append((await world.env.client.get(f"/proofs/{proof_id}", headers=world.env.auth("provider"))).status)
        if seen[-1] == 404:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("retention did not remove the receipt within 10 s")
    assert seen[0] == 200  # served until retention removed it
    status, body = await world.grant("insure-y", domain, recordhash=record, at=datetime.now(UTC) + timedelta(seconds=1))
    assert status == 422
    assert body["detail"] == (
        f"unknown record {record}: not a record of {SUBJECT} in {domain}, or its receipts passed the retention"
        " period (2e-05 days) and were removed"
    )


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("role", ["owner-app", "provider", "insurer", "auditor"])
async def test_every_query_cell_of_table_i_through_http(world: World, role: str, domain: str) -> None:
    who = ROLE_KEY[role]
    status, _ = await world.read(who, domain)
    if role == "owner-app":
        assert status == 200
        return
    assert status == 403
    if role == "auditor":
        return
    assert "query" in TABLE_I[domain][role]
    assert (await world.grant(TENANT[who], domain))[0] == 201
    assert (await world.read(who, domain))[0] == 200


async def test_forged_replayed_and_resigned_events_are_refused(world: World) -> None:
    good = world.owner.sign(event("grant", SUBJECT, "insure-y", "insurance"))
    forged = dict(good, receiver="clinic-x")  # changed after signing
    status, body = await world.post("/access-events", forged, "app")
    assert status == 422 and "does not verify" in body["detail"]
    stranger = Party()
    status, body = await world.post(
        "/access-events", stranger.sign(event("grant", SUBJECT, "insure-y", "insurance")), "app"
    )
    assert status == 422 and "unknown key" in body["detail"]
    wrong_party = world.insurer.sign(event("grant", SUBJECT, "insure-y", "insurance"))  # a receiver granting itself
    status, body = await world.post("/access-events", wrong_party, "app")
    assert status == 422 and "unknown key" in body["detail"]
    assert (await world.post("/access-events", good, "app"))[0] == 201
    status, body = await world.post("/access-events", good, "app")
    assert status == 409 and "replay" in body["detail"]
    # ES256 signatures are malleable: (r, n - s) is another valid signature over the same bytes
    req = world.clinic.sign(event("request", SUBJECT, "clinic-x", "personal-health"))
    assert (await world.post("/access-events", req, "provider"))[0] == 201
    sig = b64url_decode(req["signature"])
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    flipped = sig[:32] + (n - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
    resigned = dict(req, signature=b64url(flipped))
    verify_signature(parse_event(resigned), jwk_public_key(world.clinic.jwk))  # still a valid signature...
    status, body = await world.post("/access-events", resigned, "provider")
    assert status == 409  # ...of an event already recorded


async def test_event_checks_name_the_problem(world: World) -> None:
    now = datetime.now(UTC)
    cases = [
        (event("grant", SUBJECT, "insure-y", "insurance", at=now - timedelta(hours=1)), "minutes from the service"),
        (
            dict(event("grant", SUBJECT, "insure-y", "insurance"), expirydate=stamp(now - timedelta(seconds=5))),
            "after time",
        ),
        (event("grant", SUBJECT, "insure-y", "insurance", recordhash=_h("never sent")), "unknown record"),
        (
            event(
                "grant",
                SUBJECT,
                "insure-y",
                "insurance",
                at=now - timedelta(minutes=2),
                expires_in=timedelta(minutes=1),
            ),
            "is in the past",
        ),
        (event("grant", SUBJECT, "insure-y", "dentistry"), "domain 'dentistry' is unknown"),
        (dict(event("grant", SUBJECT, "insure-y", "insurance"), when="now"), "unknown field(s) when"),
    ]
    for doc, words in cases:
        status, body = await world.post("/access-events", world.owner.sign(doc), "app")
        assert status == 422 and words in body["detail"], (words, body)
    unsigned = event("grant", SUBJECT, "insure-y", "insurance")
    status, body = await world.post("/access-events", unsigned, "app")
    assert status == 422 and "signature" in body["detail"]


async def test_a_known_record_can_be_named(world: World) -> None:
    resp = await world.env.client.post(
        "/hashes", json={"hashes": [_h("steps")], "subject": SUBJECT}, headers=world.env.auth("app")
    )
    assert resp.status == 202
    doc = world.owner.sign(event("grant", SUBJECT, "clinic-x", "personal-health", recordhash=_h("steps")))
    assert (await world.post("/access-events", doc, "app"))[0] == 201


async def test_one_tenant_never_sees_another_tenants_subjects(world: World) -> None:
    other = Party()
    status, body = await world.post("/signing-keys", {"jwk": other.jwk, "subject": SUBJECT}, "app2")
    assert status == 409 and "another app" in body["detail"]  # the pseudonym is taken; nothing else is shown
    assert (await world.read("app2", "personal-health"))[0] == 404
    assert (await world.get(f"/subjects/{SUBJECT}/access-events", "app2"))[0] == 404
    grant = other.sign(event("grant", SUBJECT, "insure-y", "insurance"))
    assert (await world.post("/access-events", grant, "app2"))[0] == 403
    assert (await world.get(f"/subjects/{SUBJECT}/access-events", "provider"))[0] == 403


async def test_event_receipts_verify_offline_with_pinned_keys(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    env = world.env
    assert (await world.grant("insure-y", "medical-history"))[0] == 201
    assert (await world.read("payer", "medical-history"))[0] == 200
    status, body = await world.get(f"/subjects/{SUBJECT}/access-events", "auditor")
    assert status == 200
    status, service_key = await world.get("/signing-keys/service", "auditor")
    pinned = {world.owner.key_id: world.owner.jwk, service_key["key_id"]: service_key["jwk"]}
    ledger = env.service.ledger()
    assert ledger is not None
    verifier = Verifier([ledger.ledger.public_key])
    previous = None
    for item in body["events"]:
        ev = parse_event(item["event"])
        verify_signature(ev, jwk_public_key(pinned[ev.key_id]))
        resp = await env.client.get(
            f"/proofs/{item['proof_id']}?wait=anchored&timeout=10",
            headers=env.auth("app" if ev.action == "grant" else "payer"),
        )
        receipt = await resp.json()
        assert receipt["hash"] == ev.event_hash() == item["event_hash"]
        assert receipt["domain"] == "medical-history"
        assert verifier.verify(receipt).anchors[0].status.value == "verified"
        # the same offline, with receipt-verify event
        d = env.data_dir / "audit"
        d.mkdir(exist_ok=True)
        (d / "item.json").write_text(json.dumps(item))
        (d / "receipt.json").write_text(json.dumps(receipt))
        (d / "key.json").write_text(json.dumps(pinned[ev.key_id]))
        (d / "ledger.pem").write_text(ledger.ledger.public_key_pem())
        args = ["event", str(d / "item.json"), "--key", str(d / "key.json"), "--receipt", str(d / "receipt.json")]
        assert verify_main([*args, "--ledger-key", str(d / "ledger.pem")]) == 0
        assert verify_main(args) == 1  # the ledger key not pinned: the anchor is not verified
        if previous is not None:  # a valid receipt of another event: the event is authentic, not anchored by it
            (d / "receipt.json").write_text(json.dumps(previous))
            capsys.readouterr()
            assert verify_main([*args, "--ledger-key", str(d / "ledger.pem")]) == 1
            err = capsys.readouterr().err
            assert f"invalid: the record's SHA-256 {ev.event_hash()} is not the hash this receipt covers" in err
        previous = receipt
    assert previous is not None and len(body["events"]) > 1


async def test_fhir_bundle_validates(world: World) -> None:
    assert (await world.grant("insure-y", "medical-history", expires_in=timedelta(days=30)))[0] == 201
    assert (await world.read("payer", "medical-history"))[0] == 200
    assert (await world.revoke("insure-y", "medical-history"))[0] == 201
    assert (await world.grant("clinic-x", "personal-health"))[0] == 201
    resp = await world.env.client.get(f"/subjects/{SUBJECT}/access-events?format=fhir", headers=world.env.auth("app"))
    assert resp.status == 200 and resp.content_type == "application/fhir+json"
    doc = await resp.json(content_type=None)
    bundle = Bundle.model_validate(doc)  # the fhir.resources models validate every resource
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["AuditEvent", "Consent", "AuditEvent", "AuditEvent", "AuditEvent", "Consent"]
    consents = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Consent"]
    assert [c.status for c in consents] == ["inactive", "active"]  # the first grant was revoked
    audit = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "AuditEvent"]
    assert [a.subtype[0].code for a in audit] == ["grant", "access", "revoke", "grant"]
