"""Real server processes: kill -9 mid-load loses nothing acknowledged; SIGTERM drains the open window."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receipt_service.sqlite_store import SQLiteStore
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.ledger import iter_ledger, load_public_key, verify_chain

CLI = [sys.executable, "-m", "receipt_service._cli"]
_SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")


def _create_key(data_dir: Path) -> str:
    out = subprocess.run(
        [*CLI, "keys", "create", "--tenant", "crash-test", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@contextmanager
def _server(data_dir: Path, window: float) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--data-dir", str(data_dir), "--port", "0", "--window-seconds", str(window)],
        stderr=subprocess.PIPE,
        text=True,
    )
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise AssertionError(f"server exited early with {proc.wait()}")
            m = _SERVING.search(line)
            port = m.group(1) if m else None
        assert port is not None, "server did not report its port"
        drain = threading.Thread(target=_drain, args=(proc.stderr,), daemon=True)  # never block on a full pipe
        drain.start()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if drain is not None:
            drain.join(timeout=30)  # EOF once the server and its tree-building worker are gone
            assert not drain.is_alive(), "a process of the server outlived it (it holds the server's stderr)"
        elif proc.stderr is not None:
            proc.stderr.close()


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass
    stream.close()


async def _load(base: str, token: str, acked: dict[str, str], stop_after: float) -> int:
    """Concurrent submitters until the server dies or ``stop_after`` passes; returns requests acked."""
    deadline = time.monotonic() + stop_after
    done = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            hashes = [os.urandom(32).hex() for _ in range(random.randint(1, 60))]
            try:
                async with http.post("/hashes", json={"hashes": hashes}) as resp:
                    if resp.status != 202:
                        continue
                    body = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                return  # the server is gone: whatever was not acknowledged does not count
            for item in body["hashes"]:
                acked[item["proof_id"]] = item["hash"]
            done += 1

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(8)))
    return done


def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    token = _create_key(tmp_path)
    acked: dict[str, str] = {}
    rng = random.Random(os.urandom(8))
    for _ in range(3):
        with _server(tmp_path, window=0.1) as (proc, base):
            kill_at = rng.uniform(0.3, 1.2)

            async def run(base: str = base, proc: subprocess.Popen[str] = proc, kill_at: float = kill_at) -> int:
                load = asyncio.create_task(_load(base, token, acked, stop_after=30))
                await asyncio.sleep(kill_at)
                proc.send_signal(signal.SIGKILL)
                return await load

            assert asyncio.run(run()) > 0
            assert proc.wait(timeout=30) == -signal.SIGKILL
    assert len(acked) > 100

    with _server(tmp_path, window=0.1) as (proc, base):
        receipts = asyncio.run(_collect(base, token, list(acked)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    pub = _ledger_public_key(tmp_path)
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


def _ledger_public_key(data_dir: Path) -> Ed25519PublicKey:
    private = serialization.load_pem_private_key((data_dir / "ledger-key.pem").read_bytes(), password=None)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return load_public_key(pem)


async def _collect(base: str, token: str, ids: list[str]) -> dict[str, dict[str, object]]:
    """Every receipt, once anchored (polling in batches of 250, up to 60 s)."""
    out: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http:
        todo = list(ids)
        while todo and time.monotonic() < deadline:
            later = []
            for i in range(0, len(todo), 250):
                chunk = todo[i : i + 250]
                async with http.get("/proofs", params={"ids": ",".join(chunk)}) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                assert body["not_found"] == [], f"acknowledged ids lost: {body['not_found'][:5]}"
                for doc in body["receipts"]:
                    if doc["state"] == "anchored":
                        out[doc["proof_id"]] = doc
                    else:
                        later.append(doc["proof_id"])
            todo = later
            if todo:
                await asyncio.sleep(0.2)
    assert not todo, f"{len(todo)} receipts never anchored"
    return out


def test_sigterm_closes_and_anchors_the_open_window(tmp_path: Path) -> None:
    token = _create_key(tmp_path)
    acked: dict[str, str] = {}
    with _server(tmp_path, window=3600) as (proc, base):  # no window would close on its own
        asyncio.run(_load(base, token, acked, stop_after=0.5))
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
