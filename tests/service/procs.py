"""Real service processes for tests: start, load, collect receipts (shared by crash and Fabric tests)."""

from __future__ import annotations

import asyncio
import os
import random
import re
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

from receipt_verifier.ledger import load_public_key

CLI = [sys.executable, "-m", "receipt_service._cli"]
_SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")


def create_key(data_dir: Path, role: str | None = None, tenant: str = "crash-test") -> str:
    out = subprocess.run(
        [*CLI, "keys", "create", "--tenant", tenant, "--data-dir", str(data_dir), *(["--role", role] if role else [])],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@contextmanager
def server(
    data_dir: Path, window: float, *extra: str, env: dict[str, str] | None = None, lines: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A ``receipt-service serve`` process on a free port (``env`` added to its environment); killed on exit.

    ``lines`` collects what it logs."""
    proc = subprocess.Popen(
        [*CLI, "serve", "--data-dir", str(data_dir), "--port", "0", "--window-seconds", str(window), *extra],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        said: list[str] = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            said.append(line)
            if lines is not None:
                lines.append(line)
            if not line:
                raise AssertionError(f"server exited early with {proc.wait()}:\n{''.join(said[-20:])}")
            m = _SERVING.search(line)
            port = m.group(1) if m else None
        assert port is not None, "server did not report its port"
        drain = threading.Thread(target=_drain, args=(proc.stderr, lines), daemon=True)  # never block on a full pipe
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


def _drain(stream: IO[str], lines: list[str] | None) -> None:
    for line in stream:
        if lines is not None:
            lines.append(line)
    stream.close()


async def load(
    base: str, token: str, acked: dict[str, str], stop_after: float, max_batch: int = 60, workers: int = 8
) -> int:
    """Concurrent submitters until the server dies or ``stop_after`` passes; returns requests acked."""
    deadline = time.monotonic() + stop_after
    done = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            hashes = [os.urandom(32).hex() for _ in range(random.randint(1, max_batch))]
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
        await asyncio.gather(*(worker(http) for _ in range(workers)))
    return done


async def spread_load(
    bases: list[str],
    token: str,
    acked: dict[str, str],
    stop: asyncio.Event,
    max_batch: int = 20,
    fresh_connections: bool = False,
) -> None:
    """Workers posting to random instances until ``stop``; an error (instance or Redis down) is retried."""

    async def worker(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            base = random.choice(bases)
            hashes = [os.urandom(32).hex() for _ in range(random.randint(1, max_batch))]
            try:
                async with http.post(f"{base}/hashes", json={"hashes": hashes}) as resp:
                    if resp.status != 202:
                        await asyncio.sleep(0.05)
                        continue
                    body = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.05)
                continue
            for item in body["hashes"]:
                acked[item["proof_id"]] = item["hash"]

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(force_close=fresh_connections)  # fresh: a connection per request
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"}, timeout=timeout, connector=connector
    ) as http:
        await asyncio.gather(*(worker(http) for _ in range(4)))


def ledger_public_key(data_dir: Path) -> Ed25519PublicKey:
    private = serialization.load_pem_private_key((data_dir / "ledger-key.pem").read_bytes(), password=None)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return load_public_key(pem)


async def collect(base: str, token: str, ids: list[str], timeout: float = 60) -> dict[str, dict[str, object]]:
    """Every receipt, once anchored (polling in batches of 250, up to ``timeout`` seconds)."""
    out: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + timeout
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
