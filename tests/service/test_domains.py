"""Table I as data, and through HTTP: who may add to which domain; v2 receipts; one domain per tree."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from receipt_service.domains import DOMAINS, HOME_DOMAIN, ROLES, TABLE_I, check_subject, may, table_markdown
from receipt_verifier import Verifier

from .conftest import Env
from .parties import Party

ROLE_KEY = {"owner-app": "app", "provider": "provider", "insurer": "payer", "auditor": "auditor"}
SUBJECT = "hmac-sha256:6a09e667f3bcc908"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_table_i_is_the_papers() -> None:
    updaters = {d: {r for r, ops in rows.items() if "update" in ops} for d, rows in TABLE_I.items()}
    assert updaters == {"personal-health": {"owner-app"}, "medical-history": {"provider"}, "insurance": {"insurer"}}
    for domain in DOMAINS:  # everyone in Table I may query every domain; receivers only with a grant
        for role in ("owner-app", "provider", "insurer"):
            d = may(role, "query", domain)
            assert d.allowed and d.access == ("own" if role == "owner-app" else "grant")
        assert not may("auditor", "query", domain).allowed
    for role, domain in HOME_DOMAIN.items():
        assert may(role, "update", domain).allowed
    assert "| medical-history | Healthcare Provider (`provider`) | Update, Query with the owner's grant |" in (
        table_markdown()
    )


@pytest.mark.parametrize("bad", ["John Smith", "short", "x" * 129, "name@example.org", ""])
def test_subjects_are_bounded_pseudonyms(bad: str) -> None:
    with pytest.raises(ValueError, match="pseudonymous"):
        check_subject(bad)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("domain", DOMAINS)
async def test_every_update_cell_of_table_i_through_http(env: Env, role: str, domain: str) -> None:
    body = {"hashes": [_h(f"{role} {domain}")], "domain": domain}
    resp = await env.client.post("/hashes", json=body, headers=env.auth(ROLE_KEY[role]))
    problem = await resp.json()
    if role != "auditor" and "update" in TABLE_I[domain].get(role, ()):
        assert resp.status == 202, problem
        assert problem["domain"] == domain
    else:
        assert resp.status == 403, problem
        assert resp.content_type == "application/problem+json"
        assert "Table I" in problem["detail"]


async def _anchored(env: Env, who: str, proof_id: str) -> dict[str, Any]:
    resp = await env.client.get(f"/proofs/{proof_id}?wait=anchored&timeout=10", headers=env.auth(who))
    assert resp.status == 200, await resp.text()
    doc: dict[str, Any] = await resp.json()
    assert doc["state"] == "anchored"
    return doc


def _verifier(env: Env) -> Verifier:
    ledger = env.service.ledger()
    assert ledger is not None
    return Verifier([ledger.ledger.public_key])


async def register(env: Env, who: str, party: Party, subject: str | None = None) -> None:
    body: dict[str, Any] = {"jwk": party.jwk} | ({"subject": subject} if subject else {})
    resp = await env.client.post("/signing-keys", json=body, headers=env.auth(who))
    assert resp.status == 201, await resp.text()


async def test_v2_receipts_bind_domain_subject_and_log_position(env: Env) -> None:
    await register(env, "app", Party(), SUBJECT)
    ids = []
    for batch in (["a", "b"], ["c"]):
        resp = await env.client.post(
            "/hashes", json={"hashes": [_h(x) for x in batch], "subject": SUBJECT}, headers=env.auth("app")
        )
        assert resp.status == 202
        body = await resp.json()
        assert body["domain"] == "personal-health" and body["subject"] == SUBJECT  # the role's home domain
        ids += [item["proof_id"] for item in body["hashes"]]
    verifier = _verifier(env)
    for seq, proof_id in enumerate(ids):
        doc = await _anchored(env, "app", proof_id)
        assert doc["@context"] == "https://w3id.org/health-receipt/v2"
        assert (doc["domain"], doc["subject"], doc["subject_seq"]) == ("personal-health", SUBJECT, seq)
        assert verifier.verify(doc).anchors[0].status.value == "verified"
        moved = dict(doc, subject_seq=seq + 1)
        with pytest.raises(Exception, match="ops\\[1\\]"):
            verifier.verify(moved)


async def test_a_tree_never_mixes_domains(env: Env) -> None:
    sent = {"app": 3, "provider": 2, "payer": 1, "clinic": 4}
    ids: dict[str, list[str]] = {}
    for who, n in sent.items():
        items = await env.submit([_h(f"{who}{i}") for i in range(n)], who)
        ids[who] = [i["proof_id"] for i in items]
    trees = {}
    for who, proof_ids in ids.items():
        for proof_id in proof_ids:
            doc = await _anchored(env, who, proof_id)
            trees.setdefault(who, set()).add((doc["tree"]["window_id"], doc["tree"]["tree_index"]))
            assert doc["tree"]["tree_size"] == sent[who]  # one window each: the tree holds exactly that domain
            assert doc.get("domain") == {
                "app": "personal-health",
                "provider": "medical-history",
                "payer": "insurance",
            }.get(who)
    assert len(set.union(*trees.values())) == len(sent)  # four lanes, four different trees


async def test_placement_errors_are_clear(env: Env) -> None:
    await register(env, "app", Party(), SUBJECT)
    cases = [
        ("app", {"subject": "hmac-sha256:000000000000000000"}, 422, "unknown subject"),
        ("app2", {"subject": SUBJECT}, 422, "unknown subject"),  # another app's subject: not even its existence
        ("clinic", {"domain": "medical-history"}, 422, "has no role"),
        ("provider", {"domain": "dentistry"}, 422, "domain 'dentistry' is unknown"),
        ("provider", {"subject": "Jane Doe"}, 422, "pseudonymous"),
        ("provider", {"subject": 7}, 422, "subject must be a string"),
        ("auditor", {}, 403, "read-only"),
    ]
    for who, extra, status, text in cases:
        resp = await env.client.post("/hashes", json={"hashes": [_h("x")], **extra}, headers=env.auth(who))
        assert resp.status == status, (who, extra)
        assert text in (await resp.json())["detail"]
    raw = bytes.fromhex(_h("raw"))
    resp = await env.client.post(
        "/hashes?domain=medical-history&subject=" + SUBJECT,
        data=raw,
        headers={**env.auth("provider"), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 202 and (await resp.json())["subject"] == SUBJECT
    resp = await env.client.post(
        "/hashes?domian=x", data=raw, headers={**env.auth("provider"), "Content-Type": "application/octet-stream"}
    )
    assert resp.status == 422 and "domian" in (await resp.json())["detail"]


def test_the_docs_print_table_i_from_the_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "health-model.md").read_text()
    assert table_markdown() in readme
