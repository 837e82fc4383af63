"""Real server processes: kill -9 mid-load loses nothing acknowledged; SIGTERM drains the open window."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from pathlib import Path

from receipt_service.sqlite_store import SQLiteStore
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.ledger import iter_ledger, verify_chain

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
