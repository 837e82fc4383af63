"""``serve --workers``: real worker processes on one port and one data directory. Every acknowledged hash
is anchored once and verifies offline, whichever worker took it and whichever worker is killed."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from receipt_service.metrics import MULTIPROC_ENV
from receipt_service.stores.workers import leader_pid
from receipt_service.supervisor import METRICS_DIR
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.ledger import iter_ledger, key_id, verify_chain

from .procs import CLI, collect, create_key, ledger_public_key, server, spread_load


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (this container's PID 1 does not reap orphans).

    A process reaped between the open and the read makes the read fail with ESRCH.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _workers(supervisor: int) -> list[int]:
    """The live worker pids of a supervisor."""
    out = subprocess.run(["pgrep", "-P", str(supervisor)], check=False, capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if not _gone(int(p))]


def _led_by_another(supervisor: int, data_dir: Path, killed: int) -> bool:
    """Two workers run again and one other than ``killed`` leads."""
    return len(_workers(supervisor)) == 2 and leader_pid(data_dir) not in (None, killed)


def _restarted(lines: list[str], times: int) -> bool:
    """The supervisor has said ``times`` times that a worker serves again."""
    return "".join(lines).count("serves again") == times


def _wait(predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _load_for(base: str, token: str, acked: dict[str, str], seconds: float) -> None:
    """Load from fresh connections (so the kernel spreads them over the workers) for ``seconds``."""

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(spread_load([base], token, acked, stop, fresh_connections=True))
        await asyncio.sleep(seconds)
        stop.set()
        await task

    asyncio.run(run())


def _serve(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``receipt-service serve`` on ``data_dir``, expected to stop at once (refused)."""
    return subprocess.run(
        [*CLI, "serve", "--data-dir", str(data_dir), *extra], check=False, capture_output=True, text=True, timeout=60
    )


def _check_store(data_dir: Path, acked: dict[str, str], receipts: dict[str, dict[str, object]]) -> set[int]:
    """Receipts verified offline; trees contiguous and anchored once on a verified ledger; returns the
    clock columns the stored batches carry (one per worker that took hashes)."""
    pub = ledger_public_key(data_dir)
    verifier = Verifier([pub])
    for proof_id, hash_hex in acked.items():
        result = verifier.verify_policy(json.dumps(receipts[proof_id]), AnchorPolicy(), record_hash=hash_hex)
        assert result.anchors[0].status.value == "verified", proof_id
    entries = list(iter_ledger((data_dir / "ledger.jsonl").read_bytes().splitlines()))
    verify_chain(entries, pub)
    trees = [(e.entry.window_id, e.entry.tree_index) for e in entries]
    assert len(trees) == len(set(trees)), "a tree was anchored twice"
    with sqlite3.connect(data_dir / "receipts.sqlite3") as db:
        stored = db.execute("SELECT coalesce(max(first_seq + count - 1), 0) FROM batches").fetchone()[0]
        ranges = db.execute("SELECT first_seq, last_seq FROM trees ORDER BY first_seq").fetchall()
        clocks = {r[0] for r in db.execute("SELECT DISTINCT clock FROM batches")}
        open_jobs = db.execute("SELECT count(*) FROM anchors WHERE anchor IS NULL").fetchone()[0]
    assert stored >= len(acked) and sum(e.entry.tree_size for e in entries) == stored
    assert ranges[0][0] == 1 and ranges[-1][1] == stored
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), "trees overlap or leave a gap"
    assert open_jobs == 0
    return clocks


def test_workers_share_one_port_and_stop_leader_last(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    lines: list[str] = []
    with server(tmp_path, 0.2, "--workers", "2", lines=lines) as (proc, base):
        _load_for(base, token, acked, 2.0)
        receipts = asyncio.run(collect(base, token, list(acked), timeout=60))
        leader = leader_pid(tmp_path)
        assert leader in _workers(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    assert len(acked) > 100
    clocks = _check_store(tmp_path, acked, receipts)
    assert len(clocks) == 2, "both workers took hashes"
    pinned = json.loads((tmp_path / "ledger-key.pub.json").read_text())  # written once, by the supervisor
    assert pinned["key_id"] == key_id(ledger_public_key(tmp_path))
    text = "".join(lines)
    stopped = [line for line in text.splitlines() if "receipt_service: stopped" in line]
    assert len(stopped) == 2 and f"worker {leader_pid_index(text, leader)} " in stopped[-1], "the leader stops last"


def leader_pid_index(log: str, pid: int | None) -> int:
    """The worker index the log gives the process ``pid``."""
    for line in log.splitlines():
        if f"ready (pid {pid}," in line:
            return int(line.split("worker ")[1].split()[0])
    raise AssertionError(f"no worker with pid {pid} in the log")


def test_kill_9_of_the_leader_and_of_a_follower_loses_nothing(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    lines: list[str] = []
    with server(tmp_path, 0.2, "--workers", "2", env={"RECEIPT_SERVICE_LEASE_SECONDS": "0.6"}, lines=lines) as (
        proc,
        base,
    ):
        stop = asyncio.Event()

        async def run() -> None:
            task = asyncio.create_task(spread_load([base], token, acked, stop, fresh_connections=True))
            for n, victim in enumerate(("leader", "follower"), 1):
                await asyncio.sleep(1.0)
                leader = leader_pid(tmp_path)
                assert leader is not None
                pids = _workers(proc.pid)
                pid = leader if victim == "leader" else next(p for p in pids if p != leader)
                os.kill(pid, signal.SIGKILL)
                new_leader = functools.partial(_led_by_another, proc.pid, tmp_path, pid)
                restarted = functools.partial(_restarted, lines, n)  # it serves again before the next kill
                await asyncio.to_thread(_wait, functools.partial(_gone, pid), 10, f"the {victim} to die")
                await asyncio.to_thread(_wait, new_leader, 30, "a new leader")
                await asyncio.to_thread(_wait, restarted, 30, "the worker to be restarted")
            await asyncio.sleep(1.0)
            stop.set()
            await task

        asyncio.run(run())
        receipts = asyncio.run(collect(base, token, list(acked), timeout=120))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    text = "".join(lines)
    assert text.count("exited with code -9") == 2 and text.count("serves again") == 2
    assert "this instance leads now" in text
    assert len(acked) > 100
    _check_store(tmp_path, acked, receipts)


def test_long_polls_on_every_worker_wake_when_the_leader_anchors(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    with server(tmp_path, 0.5, "--workers", "2") as (proc, base):

        async def poll(i: int) -> tuple[str, float]:
            async with aiohttp.ClientSession(  # a connection each, so the kernel spreads them over the workers
                base, headers={"Authorization": f"Bearer {token}"}, connector=aiohttp.TCPConnector(force_close=True)
            ) as http:
                async with http.post("/hashes", json={"hashes": [os.urandom(32).hex()]}) as resp:
                    proof_id = (await resp.json())["hashes"][0]["proof_id"]
                t0 = time.monotonic()
                async with http.get(f"/proofs/{proof_id}", params={"wait": "anchored", "timeout": "10"}) as resp:
                    doc = await resp.json()
                return str(doc["state"]), time.monotonic() - t0

        async def polls() -> list[tuple[str, float]]:
            return await asyncio.wait_for(asyncio.gather(*(poll(i) for i in range(16))), 30)

        results = asyncio.run(polls())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    assert [state for state, _ in results] == ["anchored"] * 16
    assert max(took for _, took in results) < 5, "a long poll waited far past its window"
    with sqlite3.connect(tmp_path / "receipts.sqlite3") as db:
        assert len({r[0] for r in db.execute("SELECT DISTINCT clock FROM batches")}) == 2, "both workers served"


def test_a_killed_supervisor_takes_its_workers_along_and_nothing_is_lost(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    acked: dict[str, str] = {}
    with server(tmp_path, 3600, "--workers", "2") as (proc, base):  # no window closes on its own
        _load_for(base, token, acked, 1.0)
        workers = _workers(proc.pid)
        assert len(workers) == 2
        for pid in workers:  # workers still busy when the supervisor dies: they keep the data directory
            os.kill(pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        other = _serve(tmp_path, "--port", "0")
        assert other.returncode == 1 and "another receipt-service" in other.stderr, other.stderr
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        _wait(lambda: all(_gone(p) for p in workers), 60, "the workers to stop")
    assert acked
    with server(tmp_path, 0.2) as (proc, base):  # the data directory is free again; the leader had drained
        receipts = asyncio.run(collect(base, token, list(acked), timeout=60))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    _check_store(tmp_path, acked, receipts)


def test_a_second_service_on_the_data_directory_is_refused(tmp_path: Path) -> None:
    with server(tmp_path, 1.0, "--workers", "2") as (proc, _):
        other = _serve(tmp_path, "--port", "0")
        assert other.returncode == 1
        assert f"another receipt-service (pid {proc.pid}) serves the data directory {tmp_path}" in other.stderr
        again = _serve(tmp_path, "--port", "0", "--workers", "3")
        assert again.returncode == 1 and "another receipt-service" in again.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    redis_workers = _serve(tmp_path, "--workers", "2", "--store", "redis://127.0.0.1:1/0")
    assert redis_workers.returncode == 1
    assert "with a Redis store, run several instances instead" in redis_workers.stderr


def _metrics(base: str, reads: int = 8) -> list[dict[str, float]]:
    """``/metrics`` read ``reads`` times, each on a fresh connection (the kernel picks the worker)."""

    async def read() -> list[dict[str, float]]:
        out = []
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(reads):
                async with http.get("/metrics") as resp:
                    families = text_string_to_metric_families(await resp.text())
                out.append({s.name: s.value for f in families for s in f.samples if not s.labels})
        return out

    return asyncio.run(read())


def test_metrics_count_every_worker_and_a_dead_workers_counts_stay(tmp_path: Path) -> None:
    token = create_key(tmp_path)
    stale = tmp_path / METRICS_DIR  # values left by an earlier service killed with its supervisor
    stale.mkdir()
    left = "from prometheus_client import Counter; Counter('receipt_hashes_accepted', '').inc(1000)"
    subprocess.run([sys.executable, "-c", left], env={**os.environ, MULTIPROC_ENV: str(stale)}, check=True)
    assert list(stale.iterdir())
    acked: dict[str, str] = {}
    lines: list[str] = []
    env = {"RECEIPT_SERVICE_LEASE_SECONDS": "0.6"}
    with server(tmp_path, 3600, "--workers", "2", env=env, lines=lines) as (proc, base):
        _load_for(base, token, acked, 1.0)
        lanes = len(list(tmp_path.glob("receipts*.sqlite3")))
        for m in _metrics(base):  # whichever worker answers: both workers' hashes, one leader's lanes
            assert m["receipt_hashes_accepted_total"] == len(acked)
            assert m["receipt_leading_lanes"] == lanes and m["receipt_sqlite_heap_bytes"] > 0
        files = sorted(p.name for p in stale.iterdir())
        leader = leader_pid(tmp_path)
        assert leader is not None
        os.kill(leader, signal.SIGKILL)
        _wait(functools.partial(_led_by_another, proc.pid, tmp_path, leader), 30, "a new leader")
        _wait(functools.partial(_restarted, lines, 1), 30, "the worker to be restarted")
        for m in _metrics(base):  # the dead leader's hashes still count; its lanes no longer do
            assert m["receipt_hashes_accepted_total"] == len(acked)
            assert m["receipt_leading_lanes"] == lanes
        assert sorted(p.name for p in stale.iterdir()) == files, "a restarted worker goes on in its files"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    with sqlite3.connect(tmp_path / "receipts.sqlite3") as db:
        assert len({r[0] for r in db.execute("SELECT DISTINCT clock FROM batches")}) == 2, "both workers took hashes"
    assert not stale.exists(), "the supervisor removes the workers' metric values when it stops"
