"""The HTTP API against a real SQLite store and local ledger: happy paths, every error, OpenAPI agreement."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate as validate_openapi

from receipt_service.errors import CorruptRecordError
from receipt_service.stores.sqlite import DB_FILE, SQLiteStore
from receipt_verifier import AnchorPolicy, Verifier, parse_receipt
from receipt_verifier.ledger import load_public_key

from .conftest import OPENAPI, Env, Factory, openapi_validate


def _hashes(n: int) -> list[str]:
    return [hashlib.sha256(os.urandom(8)).hexdigest() for _ in range(n)]


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    openapi_validate(body, "Problem")
    assert body["status"] == status and body["detail"]
    return body


async def _verifier(env: Env) -> Verifier:
    resp = await env.client.get("/ledger/key")
    doc = await resp.json()
    openapi_validate(doc, "LedgerKey")
    return Verifier([load_public_key(json.dumps(doc).encode())])


async def test_submit_then_wait_gives_a_verifiable_anchored_receipt(env: Env) -> None:
    records = [b"heart rate 72", b"treatment note", b"claim C-1"]
    hashes = [hashlib.sha256(r).hexdigest() for r in records]
    resp = await env.client.post("/hashes", json={"hashes": hashes}, headers=env.auth())
    assert resp.status == 202
    body = await resp.json()
    openapi_validate(body, "SubmitResult")
    assert [i["hash"] for i in body["hashes"]] == hashes
    verifier = await _verifier(env)
    for item, record in zip(body["hashes"], records, strict=True):
        r = await env.client.get(
            f"/proofs/{item['proof_id']}", params={"wait": "anchored", "timeout": "10"}, headers=env.auth()
        )
        assert r.status == 200
        doc = await r.json()
        openapi_validate(doc, "Receipt")
        assert doc["state"] == "anchored" and doc["hash_received"] == item["hash_received"]
        result = verifier.verify_policy(json.dumps(doc), AnchorPolicy(), record=record)
        assert [a.status.value for a in result.anchors] == ["verified"]


async def test_octet_stream_batch_and_repeated_hash_get_distinct_ids(env: Env) -> None:
    h = hashlib.sha256(b"same record").digest()
    resp = await env.client.post(
        "/hashes", data=h * 3, headers={**env.auth(), "Content-Type": "application/octet-stream"}
    )
    assert resp.status == 202
    items = (await resp.json())["hashes"]
    assert [i["hash"] for i in items] == [h.hex()] * 3
    assert len({i["proof_id"] for i in items}) == 3


async def test_states_go_pending_then_anchored(make_env: Factory) -> None:
    env = await make_env(window_seconds=3600)  # the clock never closes a window on its own here
    (item,) = await env.submit(_hashes(1))
    r = await env.client.get(f"/proofs/{item['proof_id']}", headers=env.auth())
    doc = await r.json()
    openapi_validate(doc, "Receipt")
    assert doc["state"] == "pending" and doc["branches"] == [] and doc["pending_anchors"][0]["type"] == "local"
    assert parse_receipt(doc).state == "pending"
    r = await env.client.get(
        f"/proofs/{item['proof_id']}", params={"wait": "anchored", "timeout": "0.2"}, headers=env.auth()
    )
    assert (await r.json())["state"] == "pending"  # timed out: the current state
    waiter = asyncio.create_task(
        env.client.get(f"/proofs/{item['proof_id']}", params={"wait": "anchored", "timeout": "20"}, headers=env.auth())
    )
    await asyncio.sleep(0.1)
    assert not waiter.done()
    assert await env.service.aggregator.close_window() == 1
    r = await asyncio.wait_for(waiter, 10)
    assert (await r.json())["state"] == "anchored"


async def test_batch_get_lists_missing_and_foreign_ids(env: Env) -> None:
    mine = await env.submit(_hashes(3))
    theirs = await env.submit(_hashes(1), who="insurer")
    unknown = "00000000-0000-1000-8000-000000000000"
    ids = [i["proof_id"] for i in mine] + [theirs[0]["proof_id"], unknown]
    for i in mine:
        await env.client.get(
            f"/proofs/{i['proof_id']}", params={"wait": "anchored", "timeout": "10"}, headers=env.auth()
        )
    r = await env.client.get("/proofs", params={"ids": ",".join(ids)}, headers=env.auth())
    body = await r.json()
    openapi_validate(body, "ReceiptBatch")
    assert [d["proof_id"] for d in body["receipts"]] == [i["proof_id"] for i in mine]
    assert body["not_found"] == [theirs[0]["proof_id"], unknown]
    r = await env.client.get("/proofs", params={"ids": ",".join(ids), "format": "chainpoint-v4"}, headers=env.auth())
    body = await r.json()
    assert {d["type"] for d in body["receipts"]} == {"Chainpoint"}


async def test_foreign_and_unknown_ids_are_404_alike(env: Env) -> None:
    (theirs,) = await env.submit(_hashes(1), who="insurer")
    a = await _problem(await env.client.get(f"/proofs/{theirs['proof_id']}", headers=env.auth()), 404)
    fake = theirs["proof_id"][:-1] + ("0" if theirs["proof_id"][-1] != "0" else "1")
    b = await _problem(await env.client.get(f"/proofs/{fake}", headers=env.auth()), 404)
    assert a["title"] == b["title"] and "tenant" in a["detail"]


async def test_chainpoint_export_waits_for_an_anchor(make_env: Factory) -> None:
    env = await make_env(window_seconds=3600)
    (item,) = await env.submit(_hashes(1))
    url = f"/proofs/{item['proof_id']}"
    body = await _problem(await env.client.get(url, params={"format": "chainpoint-v4"}, headers=env.auth()), 409)
    assert "pending" in body["detail"]
    await env.service.aggregator.close_window()
    r = await env.client.get(
        url, params={"format": "chainpoint-v4", "wait": "anchored", "timeout": "10"}, headers=env.auth()
    )
    doc = await r.json()
    openapi_validate(doc, "ChainpointV4")
    assert doc["branches"][0]["ops"][-1]["anchors"][0]["anchor_id"].startswith("local:")


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({}, 401, "missing API key"),
        ({"Authorization": "Bearer nonsense"}, 401, "malformed"),
        ({"X-API-Key": "hrk_0123456789abcdef_" + "A" * 43}, 401, "unknown"),
    ],
)
async def test_auth_failures(env: Env, headers: dict[str, str], status: int, words: str) -> None:
    body = await _problem(await env.client.post("/hashes", json={"hashes": _hashes(1)}, headers=headers), status)
    assert words in body["detail"]


async def test_scopes_and_revocation(env: Env) -> None:
    body = await _problem(
        await env.client.post("/hashes", json={"hashes": _hashes(1)}, headers=env.auth("reader")), 403
    )
    assert "'submit' scope" in body["detail"]
    (item,) = await env.submit(_hashes(1), who="writer")
    await _problem(await env.client.get(f"/proofs/{item['proof_id']}", headers=env.auth("writer")), 403)
    # the read-only key of the same tenant sees the proof
    assert (await env.client.get(f"/proofs/{item['proof_id']}", headers=env.auth("reader"))).status == 200
    key_id = env.tokens["writer"].split("_")[1]
    assert env.service.store.revoke_api_key(key_id, "2026-01-01T00:00:00Z")
    env.service.auth._ttl = 0.05  # the cached key lapses (2 s by default) without a long sleep
    await asyncio.sleep(0.1)
    body = await _problem(
        await env.client.post("/hashes", json={"hashes": _hashes(1)}, headers=env.auth("writer")), 401
    )
    assert "revoked" in body["detail"]


BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("not json", b"{nope", "application/json", 422, "not valid JSON"),
    ("not an object", b"[1]", "application/json", 422, "JSON object"),
    (
        "repeated key",
        b'{"hashes":["' + b"a" * 64 + b'"],"hashes":[]}',
        "application/json",
        422,
        "duplicate key 'hashes'",
    ),
    ("unknown field", b'{"hashes":["' + b"a" * 64 + b'"],"extra":1}', "application/json", 422, "'extra'"),
    ("no hashes", b'{"hashes":[]}', "application/json", 422, "no hashes"),
    ("not a list", b'{"hashes":"ab"}', "application/json", 422, "must be a list"),
    ("not a string", b'{"hashes":["' + b"a" * 64 + b'",5]}', "application/json", 422, "hashes[1] must be a string"),
    ("short", b'{"hashes":["abcd"]}', "application/json", 422, "hashes[0] has 4 characters"),
    ("not hex", b'{"hashes":["' + b"g" * 64 + b'"]}', "application/json", 422, "hashes[0] is not hexadecimal"),
    ("spaces", b'{"hashes":["' + b"ab " * 21 + b'a"]}', "application/json", 422, "hashes[0] is not hexadecimal"),
    ("ragged raw", b"x" * 33, "application/octet-stream", 422, "not a multiple of 32"),
    ("empty raw", b"", "application/octet-stream", 422, "no hashes"),
    ("form", b"a=1", "application/x-www-form-urlencoded", 415, "application/x-www-form-urlencoded"),
    ("text", b"hello", "text/plain", 415, "text/plain"),
]


@pytest.mark.parametrize(("name", "body", "ctype", "status", "words"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_input_is_rejected_and_disturbs_nothing(
    env: Env, name: str, body: bytes, ctype: str, status: int, words: str
) -> None:
    before = await env.submit(_hashes(2))
    resp = await env.client.post("/hashes", data=body, headers={**env.auth(), "Content-Type": ctype})
    problem = await _problem(resp, status)
    assert words in problem["detail"]
    for item in before:
        r = await env.client.get(
            f"/proofs/{item['proof_id']}", params={"wait": "anchored", "timeout": "10"}, headers=env.auth()
        )
        assert (await r.json())["state"] == "anchored"
    assert (await env.service.store.stats()).submissions == 2


async def test_limits_on_count_and_size(make_env: Factory) -> None:
    env = await make_env(max_hashes_per_request=10, max_body_bytes=2048)
    body = await _problem(await env.client.post("/hashes", json={"hashes": _hashes(11)}, headers=env.auth()), 422)
    assert "11 hashes" in body["detail"] and "limit is 10" in body["detail"]
    big = json.dumps({"hashes": _hashes(40)}).encode()
    body = await _problem(
        await env.client.post("/hashes", data=big, headers={**env.auth(), "Content-Type": "application/json"}), 413
    )
    assert "2048" in body["detail"]
    raw = os.urandom(32 * 11)
    body = await _problem(
        await env.client.post("/hashes", data=raw, headers={**env.auth(), "Content-Type": "application/octet-stream"}),
        422,
    )
    assert "11 hashes" in body["detail"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"wait": "forever"}, "wait='forever'"),
        ({"wait": "anchored", "timeout": "999"}, "timeout='999'"),
        ({"wait": "anchored", "timeout": "soon"}, "timeout='soon'"),
        ({"format": "pdf"}, "format 'pdf'"),
        ({"color": "red"}, "unknown query parameter(s) color"),
    ],
)
async def test_bad_queries(env: Env, query: dict[str, str], words: str) -> None:
    (item,) = await env.submit(_hashes(1))
    body = await _problem(await env.client.get(f"/proofs/{item['proof_id']}", params=query, headers=env.auth()), 422)
    assert words in body["detail"]


async def test_bad_ids(make_env: Factory) -> None:
    env = await make_env(max_ids_per_request=3)
    body = await _problem(await env.client.get("/proofs/not-a-uuid", headers=env.auth()), 422)
    assert "'not-a-uuid' is not a proof id" in body["detail"]
    ids = ",".join(["00000000-0000-1000-8000-000000000000"] * 4)
    body = await _problem(await env.client.get("/proofs", params={"ids": ids}, headers=env.auth()), 422)
    assert "limit is 3" in body["detail"]
    body = await _problem(await env.client.get("/proofs", headers=env.auth()), 422)
    assert "ids is required" in body["detail"]
    body = await _problem(
        await env.client.get("/proofs", params={"ids": "a,00000000-0000-1000-8000-000000000000"}, headers=env.auth()),
        422,
    )
    assert "ids[0]" in body["detail"]


async def test_unknown_route_and_method_are_problems(env: Env) -> None:
    await _problem(await env.client.get("/nope"), 404)
    body = await _problem(await env.client.delete("/hashes"), 405)
    assert "POST" in body["detail"]


@pytest.mark.sqlite_only
async def test_corrupted_row_is_reported_not_served(env: Env) -> None:
    (item,) = await env.submit(_hashes(1))
    conn = sqlite3.connect(env.data_dir / DB_FILE)
    with conn:
        conn.execute("UPDATE batches SET nonces = zeroblob(16)")
    conn.close()
    body = await _problem(await env.client.get(f"/proofs/{item['proof_id']}", headers=env.auth()), 500)
    assert "integrity check" in body["detail"]


async def test_metrics_are_rendered_off_the_event_loop(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering reads every worker's metric files under ``serve --workers``: not on the loop's thread."""
    render, threads = env.service.metrics.render, []

    def recorded() -> bytes:
        threads.append(threading.get_ident())
        return render()

    monkeypatch.setattr(env.service.metrics, "render", recorded)
    text = await (await env.client.get("/metrics")).text()
    assert "receipt_hashes_accepted_total" in text
    assert threads and threads[0] != threading.get_ident()


async def test_health_ready_metrics_openapi(env: Env) -> None:
    assert (await (await env.client.get("/healthz")).json()) == {"status": "ok"}
    ready = await (await env.client.get("/readyz")).json()
    assert ready["status"] == "ready" and set(ready["checks"].values()) == {"ok"}
    await env.submit(_hashes(5))
    await env.service.aggregator.close_window()
    wal_files = (
        env.service.store.path.parent.glob("receipts*.sqlite3-wal")
        if isinstance(env.service.store, SQLiteStore)
        else []
    )
    wal_before = sum(p.stat().st_size for p in wal_files)
    text = await (await env.client.get("/metrics")).text()
    assert "receipt_hashes_accepted_total 5.0" in text
    assert "clinic-a" not in text  # /metrics needs no key: it names no tenant
    assert 'receipt_http_requests_total{route="/hashes",status="202"} 1.0' in text
    await env.submit(_hashes(1))  # the same route and status again: the same counter goes on
    again = await (await env.client.get("/metrics")).text()
    assert 'receipt_http_requests_total{route="/hashes",status="202"} 2.0' in again
    assert 'receipt_http_requests_total{route="/metrics",status="200"} 1.0' in again
    assert "receipt_window_leaves_count" in text and "receipt_backlog_hashes 0.0" in text
    assert f"receipt_leading_lanes {len(env.service.lanes.all)}.0" in text  # alone on its store: it leads them all
    heap = next(line for line in text.splitlines() if line.startswith("receipt_sqlite_heap_bytes "))
    wal = float(next(line for line in text.splitlines() if line.startswith("receipt_sqlite_wal_bytes ")).split()[1])
    if isinstance(env.service.store, SQLiteStore):
        assert float(heap.split()[1]) > 100_000  # page caches of the open store files, at least
        # anchoring goes on writing in the background; the WAL file only grows here (cut back above 64 MiB)
        wal_after = sum(p.stat().st_size for p in env.service.store.path.parent.glob("receipts*.sqlite3-wal"))
        assert 0 < wal_before <= wal <= wal_after
    else:
        assert wal == 0
    doc = await (await env.client.get("/openapi.json")).json()
    assert doc == OPENAPI
    validate_openapi(doc)


@pytest.mark.sqlite_only  # a ledger file
async def test_readyz_fails_when_the_ledger_is_gone(env: Env) -> None:
    ledger = env.service.ledger()
    assert ledger is not None
    ledger.ledger.path.unlink()
    body = await _problem(await env.client.get("/readyz"), 503)
    assert "disappeared" in body["checks"][ledger.target]


@pytest.mark.sqlite_only  # the embedded store's writer thread
async def test_a_stopped_database_writer_is_a_503_that_says_so(make_env: Factory) -> None:
    env = await make_env(shutdown_grace_seconds=1.0)  # the drain cannot close its window: no long wait for it
    store = env.service.store
    assert isinstance(store, SQLiteStore)

    def broken_checkpoint() -> None:
        raise RuntimeError("checkpoint bookkeeping broke")

    store.writer._checkpoint = broken_checkpoint  # type: ignore[method-assign]
    store.writer.checkpoint_seconds = 0.0
    acknowledged = await env.submit(_hashes(1))  # committed, then the due checkpoint ends the thread
    await asyncio.to_thread(store.writer.thread.join, 10)
    resp = await env.client.post("/hashes", json={"hashes": _hashes(1)}, headers=env.auth())
    body = await _problem(resp, 503)
    assert "RuntimeError: checkpoint bookkeeping broke" in body["detail"] and "restart" in body["detail"]
    ready = await _problem(await env.client.get("/readyz"), 503)
    assert "writer stopped" in json.dumps(ready["checks"])
    got = await env.client.get(f"/proofs/{acknowledged[0]['proof_id']}", headers=env.auth())
    assert got.status == 200  # what was acknowledged is still there


async def test_every_route_is_documented(env: Env) -> None:
    served = {r.resource.canonical for r in env.client.app.router.routes() if r.resource is not None}
    documented = set(OPENAPI["paths"])
    assert served == documented


async def test_a_full_batch_of_250_ids_fits_in_one_request_line(env: Env) -> None:
    items = await env.submit(_hashes(250))
    ids = ",".join(i["proof_id"] for i in items)
    r = await env.client.get("/proofs", params={"ids": ids}, headers=env.auth())
    assert r.status == 200, await r.text()
    assert len((await r.json())["receipts"]) == 250


async def test_draining_refuses_new_hashes_but_serves_reads(env: Env) -> None:
    (item,) = await env.submit(_hashes(1))
    env.service.draining = True
    body = await _problem(await env.client.post("/hashes", json={"hashes": _hashes(1)}, headers=env.auth()), 503)
    assert "shutting down" in body["detail"]
    await _problem(await env.client.get("/readyz"), 503)
    assert (await env.client.get(f"/proofs/{item['proof_id']}", headers=env.auth())).status == 200


async def test_retention_drops_anchored_receipts_after_it_expires(make_env: Factory) -> None:
    env = await make_env(retention_days=3 / 86400)  # three seconds
    (item,) = await env.submit(_hashes(1))
    url = f"/proofs/{item['proof_id']}"
    r = await env.client.get(url, params={"wait": "anchored", "timeout": "10"}, headers=env.auth())
    assert (await r.json())["state"] == "anchored"
    await asyncio.sleep(1.5)  # a purge has run (every second): the receipt is younger than the retention
    assert (await env.client.get(url, headers=env.auth())).status == 200
    for _ in range(100):  # the purge runs every second
        await asyncio.sleep(0.1)
        if (await env.client.get(url, headers=env.auth())).status == 404:
            break
    await _problem(await env.client.get(url, headers=env.auth()), 404)
    assert (await env.service.store.stats()).submissions == 0


async def test_batch_chainpoint_export_lists_receipts_not_anchored_yet(make_env: Factory) -> None:
    env = await make_env(window_seconds=3600)
    items = await env.submit(_hashes(2))
    ids = ",".join(i["proof_id"] for i in items)
    r = await env.client.get("/proofs", params={"ids": ids, "format": "chainpoint-v4"}, headers=env.auth())
    body = await r.json()
    openapi_validate(body, "ReceiptBatch")
    assert body == {"receipts": [], "not_found": [], "not_anchored": [i["proof_id"] for i in items]}
    await env.service.aggregator.close_window()
    for i in items:
        await env.client.get(
            f"/proofs/{i['proof_id']}", params={"wait": "anchored", "timeout": "10"}, headers=env.auth()
        )
    body = await (
        await env.client.get("/proofs", params={"ids": ids, "format": "chainpoint-v4"}, headers=env.auth())
    ).json()
    assert [d["proof_id"] for d in body["receipts"]] == [i["proof_id"] for i in items] and body["not_anchored"] == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (lambda a: "{not json", "anchor is damaged"),
        (
            lambda a: json.dumps({**json.loads(a), "entry": {**json.loads(a)["entry"], "root": "0" * 64}}),
            "another root",
        ),
    ],
)
async def test_a_damaged_stored_anchor_is_reported_not_served(env: Env, tamper: Any, words: str) -> None:
    (item,) = await env.submit(_hashes(1))
    url = f"/proofs/{item['proof_id']}"
    await env.client.get(url, params={"wait": "anchored", "timeout": "10"}, headers=env.auth())
    conn = sqlite3.connect(env.data_dir / DB_FILE)
    with conn:
        (stored,) = conn.execute("SELECT anchor FROM anchors").fetchone()
        conn.execute("UPDATE anchors SET anchor = ?", (tamper(stored),))
    conn.close()
    body = await _problem(await env.client.get(url, headers=env.auth()), 500)
    assert words in body["detail"]


@pytest.mark.sqlite_only
async def test_a_window_that_cannot_close_makes_readyz_fail(make_env: Factory) -> None:
    env = await make_env(window_seconds=3600)
    await env.submit(_hashes(1))
    conn = sqlite3.connect(env.data_dir / DB_FILE)
    with conn:
        conn.execute("UPDATE batches SET nonces = zeroblob(16)")
    conn.close()
    with pytest.raises(CorruptRecordError):
        await env.service.aggregator.close_window()
    body = await _problem(await env.client.get("/readyz"), 503)
    assert "integrity check" in body["checks"]["windows"]
    assert (await env.service.store.stats()).backlog == 1  # still waiting, not dropped


async def test_first_hour_rough_edges(env: Env) -> None:
    """Rough edges a new user hit (issue 14): each now answers a clear problem."""
    [item] = await env.submit(_hashes(1))
    pid = item["proof_id"]
    token = env.tokens["clinic"]
    body = await _problem(await env.client.get(f"/proofs/{pid}", headers={"Authorization": token}), 401)
    assert "Bearer scheme" in body["detail"]
    ok = await env.client.get(f"/proofs/{pid}", headers={"Authorization": f"bearer {token}"})
    assert ok.status == 200
    assert (await env.client.get(f"/proofs/{pid.upper()}", headers=env.auth())).status == 200
    body = await _problem(await env.client.get(f"/proofs/{pid}?timeout=5", headers=env.auth()), 422)
    assert "only applies with wait" in body["detail"]
    body = await _problem(await env.client.get(f"/proofs/{pid}?wait=anchored&wait=aggregated", headers=env.auth()), 422)
    assert "wait given more than once" in body["detail"]
    body = await _problem(await env.client.post("/hashes", json={"hashes": ["a"]}, headers=env.auth()), 422)
    assert "has 1 character;" in body["detail"]
    no_type = await env.client.post(
        "/hashes", data=json.dumps({"hashes": _hashes(1)}).encode(), headers={**env.auth(), "Content-Type": ""}
    )
    assert no_type.status == 202, await no_type.text()
    chunked = await env.client.post(
        "/hashes",
        data=_chunks(b"x" * (env.service.settings.max_body_bytes + 5000)),
        headers={**env.auth(), "Content-Type": "application/octet-stream"},
    )
    body = await _problem(chunked, 413)
    assert body["detail"] == f"the body exceeds the limit of {env.service.settings.max_body_bytes} bytes"
    wrong = await env.client.request("DELETE", "/hashes", headers=env.auth())
    assert wrong.status == 405
    text = await (await env.client.get("/metrics")).text()
    assert 'receipt_http_requests_total{route="/hashes",status="405"} 1.0' in text


async def _chunks(data: bytes) -> Any:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


def test_openapi_receipt_schema_is_the_specs() -> None:
    spec = json.loads((Path(__file__).resolve().parents[2] / "proof_spec" / "receipt.schema.json").read_text())
    text = json.dumps({k: v for k, v in spec.items() if k not in ("$schema", "$id")})
    assert OPENAPI["components"]["schemas"]["Receipt"] == json.loads(
        text.replace('"#/$defs/', '"#/components/schemas/Receipt/$defs/')
    )
