"""Per-subject histories through HTTP: bundles that prove a complete log, and every way to break one."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receipt_service.anchors.redis_ledger import RedisLedger
from receipt_verifier._cli import main as verify_main
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id

from .conftest import Env, Factory, World, openapi_validate
from .parties import SUBJECT, Party

OTHER = "did:example:patient-0000aaaa"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _records(world: World, texts: list[str], who: str = "provider", subject: str = SUBJECT) -> None:
    env = world.env
    resp = await env.client.post(
        "/hashes", json={"hashes": [_h(t) for t in texts], "subject": subject}, headers=env.auth(who)
    )
    assert resp.status == 202, await resp.text()
    for item in (await resp.json())["hashes"]:
        r = await env.client.get(f"/proofs/{item['proof_id']}?wait=anchored&timeout=10", headers=env.auth(who))
        assert (await r.json())["state"] == "anchored"


async def _bundle(world: World, who: str = "app", domain: str = "medical-history", subject: str = SUBJECT) -> Any:
    status, body = await world.get(f"/subjects/{subject}/history?domain={domain}", who)
    assert status == 200, body
    openapi_validate(body, "HistoryBundle")
    return body


def _keys(env: Env) -> dict[str, Any]:
    ledger = env.service.ledger()
    assert ledger is not None
    return {key_id(ledger.ledger.public_key): ledger.ledger.public_key}


async def test_a_history_bundle_proves_the_whole_log(world: World) -> None:
    await _records(world, ["visit 1", "visit 2"])
    await _records(world, ["visit 3"])
    bundle = await _bundle(world)
    report, records = verify_history(bundle, _keys(world.env))
    assert report.complete, report.problems
    assert [r.hash.hex() for r in records] == [_h("visit 1"), _h("visit 2"), _h("visit 3")]
    assert report.size == 3 and report.window_id is not None


def _cols(bundle: Any) -> dict[str, list[bytes]]:
    widths = {"hashes": 32, "proof_ids": 16, "nonces": 16, "leaves": 32}
    out = {}
    for name, w in widths.items():
        raw = base64.b64decode(bundle["log"][name])
        out[name] = [raw[i : i + w] for i in range(0, len(raw), w)]
    return out


def _with(bundle: Any, cols: dict[str, list[bytes]]) -> Any:
    b = copy.deepcopy(bundle)
    for name, values in cols.items():
        b["log"][name] = base64.b64encode(b"".join(values)).decode()
    return b


def _problems(bundle: Any, env: Env, **kw: Any) -> str:
    report, _ = verify_history(bundle, _keys(env), **kw)
    assert not report.complete
    return "; ".join(report.problems)


async def test_every_way_to_break_a_history_is_named(world: World) -> None:
    env = world.env
    assert (await world.post("/signing-keys", {"jwk": Party().jwk, "subject": OTHER}, "app"))[0] == 201
    await _records(world, ["visit 1", "visit 2", "visit 3", "visit 4"])
    await _records(world, ["someone else's visit"], subject=OTHER)
    await _records(world, ["steps"], who="app")  # the same subject, another domain
    good = await _bundle(world)
    assert verify_history(good, _keys(env))[0].complete
    cols = _cols(good)

    def drop(i: int) -> dict[str, list[bytes]]:
        return {k: v[:i] + v[i + 1 :] for k, v in cols.items()}

    assert "gap at sequence 1" in _problems(_with(good, drop(1)), env)
    assert "newest record(s) missing: the log has 4, the bundle 3" in _problems(_with(good, drop(3)), env)
    swapped = {k: [v[1], v[0], *v[2:]] for k, v in cols.items()}
    assert "records out of order: position 0 holds the log's record 1" in _problems(_with(good, swapped), env)
    for foreign in (_cols(await _bundle(world, subject=OTHER)), _cols(await _bundle(world, domain="personal-health"))):
        mixed = {k: [v[0], foreign[k][0], *v[2:]] for k, v in cols.items()}
        text = _problems(_with(good, mixed), env)
        assert "record at sequence 1 is not a record of" in text and "another subject or domain" in text
    other_heads = copy.deepcopy(good)
    other_heads["window"]["heads_root"] = hashlib.sha256(b"other heads").hexdigest()
    with pytest.raises(Exception, match="signs another window, domain or heads"):
        verify_history(other_heads, _keys(env))
    with pytest.raises(Exception, match="no anchor of the window verifies"):
        verify_history(good, {})
    bad_proof = copy.deepcopy(good)
    member = bad_proof["head_proof"]["member"]
    member["size"] -= 1  # claim an older, shorter head for the subject
    with pytest.raises(Exception, match="tampered head proof"):
        verify_history(bad_proof, _keys(env))


async def test_an_old_head_and_a_forked_log_are_refused(world: World) -> None:
    env = world.env
    await _records(world, ["visit 1"])
    old = await _bundle(world)
    await _records(world, ["visit 2"])
    new = await _bundle(world)
    ledger = env.service.ledger()
    assert ledger is not None
    entries = [s.entry for s in ledger.ledger.entries()]
    assert verify_history(new, _keys(env), ledger=entries, previous=old)[0].complete  # the log only grew
    assert "a head older than the newest anchored window given" in _problems(old, env, ledger=entries)
    forked = _with(old, {"leaves": [hashlib.sha256(b"rewritten").digest()]})
    assert "forked log: record 0 differs" in _problems(new, env, previous=forked)
    assert "forked log: it shrank" in _problems(old, env, previous=new)


async def test_absence_of_a_subject_is_proven(world: World) -> None:
    env = world.env
    assert (await world.post("/signing-keys", {"jwk": Party().jwk, "subject": OTHER}, "app"))[0] == 201
    await _records(world, ["someone else's visit"], subject=OTHER)
    bundle = await _bundle(world)  # SUBJECT has no medical history; OTHER does
    assert "absent" in bundle["head_proof"]
    report, records = verify_history(bundle, _keys(env))
    assert report.complete and records == [] and report.size == 0
    hidden = await _bundle(world, subject=OTHER)
    hidden["log"] = bundle["log"]  # claim OTHER has no records, with OTHER's own (member) proof
    assert "is not the head anchored" in _problems(hidden, env)


async def test_receivers_need_a_grant_and_their_read_is_recorded(world: World) -> None:
    await _records(world, ["visit 1"])
    status, _ = await world.get(f"/subjects/{SUBJECT}/history?domain=medical-history", "payer")
    assert status == 403
    assert (await world.grant("insure-y", "medical-history"))[0] == 201
    status, bundle = await world.get(f"/subjects/{SUBJECT}/history?domain=medical-history", "payer")
    assert status == 200 and verify_history(bundle, _keys(world.env))[0].complete
    status, events = await world.get(f"/subjects/{SUBJECT}/access-events", "app")
    assert [e["event"]["action"] for e in events["events"]] == ["grant", "access"]
    status, body = await world.get(f"/subjects/{SUBJECT}/history?domain=medical-history&as_of=yesterday", "app")
    assert status == 422 and "as_of" in body["detail"]
    status, body = await world.get(f"/subjects/{SUBJECT}/history?domain=insurance&as_of=2000-01-01T00:00:00Z", "app")
    assert status == 404 and "no window" in body["detail"]


async def test_receipt_verify_history_reports(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = world.env
    texts = ["visit 1", "visit 2", "visit 3"]
    folder = tmp_path / "records"
    folder.mkdir()
    for i, t in enumerate(texts):
        (folder / f"r{i}.txt").write_text(t)
    env_records = [(folder / f"r{i}.txt").read_text() for i in range(3)]
    await _records(world, env_records)
    (tmp_path / "bundle.json").write_text(json.dumps(await _bundle(world)))
    ledger = env.service.ledger()
    assert ledger is not None
    (tmp_path / "key.pem").write_text(ledger.ledger.public_key_pem())
    args = ["history", str(tmp_path / "bundle.json"), "--ledger-key", str(tmp_path / "key.pem")]
    out = [*args, "--records", str(folder), "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")]
    if isinstance(ledger.ledger, RedisLedger):  # exported from the shared ledger, as an auditor would
        ledger_file = tmp_path / "exported-ledger.jsonl"
        ledger_file.write_bytes(b"".join(line + b"\n" for line in ledger.ledger.lines()))
    else:
        ledger_file = ledger.ledger.path
    assert verify_main([*out, "--ledger", str(ledger_file), "--max-age", "1h"]) == 0
    assert "complete" in capsys.readouterr().out
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "other.pem").write_bytes(other)  # pinned first: the ledger's chain is checked under its own key
    two = ["history", str(tmp_path / "bundle.json"), "--ledger-key", str(tmp_path / "other.pem")]
    assert verify_main([*two, *out[2:], "--ledger", str(ledger_file), "--max-age", "1h"]) == 0
    assert "complete" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["complete"] and report["files"] == {"records": 3, "matched": 3, "files": 3}
    assert [i["file"] for i in report["items"]] == ["r0.txt", "r1.txt", "r2.txt"]
    assert "History of" in (tmp_path / "r.html").read_text()
    (folder / "r1.txt").write_text("visit 2, edited")  # a record changed after it was logged
    assert verify_main(out) == 1
    text = capsys.readouterr().out
    assert "record at sequence 1 has no file" in text and "file r1.txt is not in the log" in text
    assert verify_main([*args, "--max-age", "0s"]) == 1
    assert "stale" in capsys.readouterr().out
    assert verify_main([*args, "--max-age", "soon"]) == 2
    capsys.readouterr()
    assert verify_main([*args, "--require-committed"]) == 2
    assert "--require-committed needs --trust" in capsys.readouterr().err


@pytest.mark.sqlite_only
async def test_a_log_without_a_stored_compact_range_is_rebuilt_from_its_records(world: World) -> None:
    env = world.env
    await _records(world, ["visit 1", "visit 2"])
    db = env.data_dir / "receipts.medical-history.sqlite3"
    with sqlite3.connect(db) as conn:  # as if the heads were written by a release without compact ranges
        conn.execute("DELETE FROM subject_heads")
    await _records(world, ["visit 3"])
    report, records = verify_history(await _bundle(world), _keys(env))
    assert report.complete and len(records) == 3


async def test_a_log_whose_first_records_retention_removed_still_grows(make_env: Factory) -> None:
    env = await make_env(retention_days=2 / 86400)  # two seconds
    world = World(env)
    await world.setup()
    await _records(world, ["visit 1", "visit 2"])
    store = env.service.lanes.domain("medical-history")
    assert store is not None
    for _ in range(100):  # until retention removed them
        await asyncio.sleep(0.1)
        if (await store.store.stats()).submissions == 0:
            break
    assert (await store.store.stats()).submissions == 0
    await _records(world, ["visit 3"])  # the window closes: the log grows from its stored compact range
    rows = await store.store.subject_records(SUBJECT, -1, 10)
    assert [r.log_pos for r in rows] == [2]
