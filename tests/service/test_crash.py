"""Real server processes: kill -9 mid-load loses nothing acknowledged; SIGTERM drains the open window."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from receipt_service.crashpoints import ENV as CRASH_ENV
from receipt_service.crashpoints import POINTS
from receipt_service.stores.sqlite import SQLiteStore
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import iter_ledger, key_id, verify_chain
from receipt_verifier.proof_id import parse_proof_id

from .parties import Party
from .procs import collect, create_key, ledger_public_key, load, server


def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    rng = random.Random(os.urandom(8))
    for _ in range(3):
        with server(tmp_path, window=0.1) as (proc, base):
            kill_at = rng.uniform(0.3, 1.2)

            async def run(base: str = base, proc: subprocess.Popen[str] = proc, kill_at: float = kill_at) -> int:
                task = asyncio.create_task(load(base, token, acked, stop_after=30))
                await asyncio.sleep(kill_at)
                proc.send_signal(signal.SIGKILL)
                return await task

            assert asyncio.run(run()) > 0
            assert proc.wait(timeout=30) == -signal.SIGKILL
    assert len(acked) > 100

    with server(tmp_path, window=0.1) as (proc, base):
        receipts = asyncio.run(collect(base, token, list(acked)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    pub = ledger_public_key(tmp_path)
    verifier = Verifier([pub])
    anchored = 0
    for proof_id, hash_hex in acked.items():
        doc = receipts[proof_id]
        result = verifier.verify_policy(json.dumps(doc), AnchorPolicy(), record_hash=hash_hex)
        anchored += result.anchors[0].status.value == "verified"
    assert anchored == len(acked), f"{len(acked) - anchored} acknowledged hashes were not anchored"

    entries = list(iter_ledger((tmp_path / "ledger.jsonl").read_bytes().splitlines()))
    verify_chain(entries, pub)
    trees = [(e.entry.window_id, e.entry.tree_index) for e in entries]
    assert len(trees) == len(set(trees)), "a tree was anchored twice"


def test_sigterm_closes_and_anchors_the_open_window(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    with server(tmp_path, window=3600) as (proc, base):  # no window would close on its own
        asyncio.run(load(base, token, acked, stop_after=0.5))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert acked
    store = SQLiteStore(tmp_path)
    try:
        stats = asyncio.run(store.stats())
    finally:
        store.close_sync()
    assert stats.submissions == len(acked)
    assert stats.backlog == 0 and stats.pending_anchors == 0
    entries = list(iter_ledger((tmp_path / "ledger.jsonl").read_bytes().splitlines()))
    assert sum(e.entry.tree_size for e in entries) == len(acked)


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_crash_at_each_dangerous_moment_loses_nothing(tmp_path: Path, point: str) -> None:
    """The service kills itself at an armed crash point under batches of up to 1000 hashes (windows of
    8,192 leaves or more are built in the worker process); after a restart every acknowledged hash is
    stored, every stored hash is in a tree anchored exactly once (the anchored tree sizes add up to
    the stored submissions), and a sample of receipts verifies offline."""
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    with server(tmp_path, 0.5, env={CRASH_ENV: f"{point}:3"}) as (proc, base):
        asyncio.run(load(base, token, acked, stop_after=60, max_batch=1000, workers=4))
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the armed crash point was never reached"
    assert len(acked) > 8192

    sample = random.Random(7).sample(sorted(acked), 1000)
    with server(tmp_path, 0.1) as (proc, base):
        receipts = asyncio.run(collect(base, token, sample, timeout=120))
        proc.send_signal(signal.SIGTERM)  # drains: every window closed and anchored before exit
        assert proc.wait(timeout=60) == 0

    verifier = Verifier([ledger_public_key(tmp_path)])
    for proof_id in sample:
        result = verifier.verify_policy(json.dumps(receipts[proof_id]), AnchorPolicy(), record_hash=acked[proof_id])
        assert result.anchors[0].status.value == "verified"
    entries = list(iter_ledger((tmp_path / "ledger.jsonl").read_bytes().splitlines()))
    verify_chain(entries, ledger_public_key(tmp_path))
    store = SQLiteStore(tmp_path)
    try:
        stats = asyncio.run(store.stats())
        ticks = [(parse_proof_id(p).clock_seq, parse_proof_id(p).ticks) for p in acked]
        found = asyncio.run(store.get_submissions(ticks))
    finally:
        store.close_sync()
    assert {r.to_submission(None).proof_id: r.hash.hex() for r in found.values()} == acked, (
        "an acknowledged hash is lost"
    )
    assert stats.backlog == 0 and stats.pending_anchors == 0
    assert sum(e.entry.tree_size for e in entries) == stats.submissions >= len(acked), "a tree was anchored twice"
    assert max(e.entry.tree_size for e in entries) >= 8192, "no window was large enough for the worker build"


@pytest.mark.parametrize("point", sorted(POINTS))
def test_a_crash_in_a_domain_lane_keeps_every_subject_log_whole(tmp_path: Path, point: str) -> None:
    """Subjects' records in medical-history under load, the service killed at an armed crash point:
    after a restart every acknowledged record is anchored in its subject's log at a unique position,
    the positions of each log run 0..n-1, and each subject's history bundle proves exactly those."""
    app = create_key(tmp_path, "owner-app", tenant="wearco")
    clinic = create_key(tmp_path, "provider", tenant="clinic")
    subjects = [f"did:example:patient-crash-{i:04d}" for i in range(5)]
    acked: dict[str, tuple[str, str]] = {}  # proof id -> (hash, subject)

    async def post(base: str, token: str, path: str, body: object) -> object:
        async with (
            aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http,
            http.post(path, json=body) as resp,
        ):
            assert resp.status < 300, await resp.text()
            return await resp.json()

    async def load_subjects(base: str) -> None:
        rng = random.Random(os.urandom(8))
        async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {clinic}"}) as http:
            for _ in range(400):
                subject = rng.choice(subjects)
                hashes = [os.urandom(32).hex() for _ in range(rng.randint(1, 300))]
                try:
                    async with http.post("/hashes", json={"hashes": hashes, "subject": subject}) as resp:
                        if resp.status != 202:
                            return
                        for item in (await resp.json())["hashes"]:
                            acked[item["proof_id"]] = (item["hash"], subject)
                except aiohttp.ClientError:
                    return  # the service died at its crash point

    with server(tmp_path, 0.3, env={CRASH_ENV: f"{point}:3"}) as (proc, base):
        for subject in subjects:
            asyncio.run(post(base, app, "/signing-keys", {"jwk": Party().jwk, "subject": subject}))
        asyncio.run(load_subjects(base))
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the armed crash point was never reached"
    assert len(acked) > 1000

    with server(tmp_path, 0.1) as (proc, base):
        receipts = asyncio.run(collect(base, clinic, list(acked), timeout=120))

        async def histories() -> dict[str, object]:
            out = {}
            async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {app}"}) as http:
                for s in subjects:
                    async with http.get(f"/subjects/{s}/history", params={"domain": "medical-history"}) as resp:
                        assert resp.status == 200, await resp.text()
                        out[s] = await resp.json()
            return out

        bundles = asyncio.run(histories())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    pub = ledger_public_key(tmp_path)
    verifier = Verifier([pub])
    positions: dict[str, list[int]] = {s: [] for s in subjects}
    for proof_id, (hash_hex, subject) in acked.items():
        doc = receipts[proof_id]
        assert (doc["domain"], doc["subject"]) == ("medical-history", subject)
        positions[subject].append(int(doc["subject_seq"]))
        result = verifier.verify_policy(json.dumps(doc), AnchorPolicy(), record_hash=hash_hex)
        assert result.anchors[0].status.value == "verified"
    for subject in subjects:
        assert len(set(positions[subject])) == len(positions[subject]), f"{subject}: two records at one position"
        report, records = verify_history(bundles[subject], {key_id(pub): pub})
        assert report.complete, report.problems  # positions 0..n-1, each its record, under the anchored head
        mine = {bytes.fromhex(h) for h, s in acked.values() if s == subject}
        logged = {r.hash: r.seq for r in records}
        assert mine <= set(logged), f"{subject}: an acknowledged record is missing from its history"
        assert all(
            logged[bytes.fromhex(receipts[p]["hash"])] == receipts[p]["subject_seq"]
            for p in acked
            if acked[p][1] == subject
        ), f"{subject}: a receipt and the history disagree on a position"
        # records stored but never acknowledged (the request in flight at the crash) may follow them
        assert len(logged) - len(mine) <= 300
    entries = list(iter_ledger((tmp_path / "ledger.jsonl").read_bytes().splitlines()))
    verify_chain(entries, pub)
    trees = [(e.entry.window_id, e.entry.tree_index) for e in entries]
    assert len(trees) == len(set(trees)), "a tree was anchored twice"
