"""Peak figures for the receipt service: an asyncio load client.

Starts a server on a temporary data directory (or targets --url with --key), then runs:
  single    1-hash requests from many connections: requests/s, ack latency p50/p99
  batch     1000-hash octet-stream requests, closed loop: peak hashes/s, ack latency p50/p99
  paced     1000-hash requests at a fixed rate (100/s = 100,000 hashes/s): ack latency at that load
  anchored  single submissions each followed by GET ?wait=anchored: submit-to-anchored p50/p99
  wrk-single, wrk-batch  the single and batch phases driven by wrk (a compiled client, one thread)
                         instead of this Python client, so that the client is not what is measured
and prints a table (and writes CSV with --csv).

    python loadtest/loadclient.py                     # all phases, 10 s each
    python loadtest/loadclient.py --phases single --seconds 5 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "receipt_service._cli"]


@dataclass
class PhaseResult:
    name: str
    seconds: float
    requests: int = 0
    hashes: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    anchored: list[float] = field(default_factory=list)
    reported: dict[float, float] = field(default_factory=dict)  # percentile -> ms, from a client that keeps no samples

    def pct(self, values: list[float], p: float) -> float:
        if not values:
            return self.reported.get(p, float("nan")) if values is self.latencies else float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


@contextmanager
def local_server(window: float, *extra: str, tree: Path | None = None) -> Iterator[tuple[str, str]]:
    """A real ``receipt-service serve`` on a temporary data directory; yields (url, key). ``tree``: run that
    checkout's service instead of the installed one (its directory first on the path: ``python -m`` puts the
    working directory before ``PYTHONPATH``, so both are set)."""
    env, cwd = None, None
    if tree is not None:
        cwd = str(tree)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "verifier" / "src")])}
    with tempfile.TemporaryDirectory(prefix="receipt-load-") as tmp:
        key = subprocess.run(
            [*CLI, "keys", "create", "--tenant", "loadtest", "--data-dir", tmp],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
            env=env,
        ).stdout.strip()
        proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--data-dir",
                tmp,
                "--port",
                "0",
                "--window-seconds",
                str(window),
                "--log-level",
                "INFO",
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        try:
            assert proc.stderr is not None
            url = _wait_for_port(proc)
            yield url, key
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def _wait_for_port(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"serving on (http://\S+)", line)
        if m:
            # keep reading so the server never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()
            return m.group(1)
    raise SystemExit(f"server exited with {proc.wait()}")


async def _post(http: aiohttp.ClientSession, res: PhaseResult, body: bytes, headers: dict[str, str]) -> None:
    """One raw-hash request, timed and counted."""
    t0 = time.perf_counter()
    async with http.post("/hashes", data=body, headers=headers) as resp:
        await resp.read()
        ok = resp.status == 202
    res.latencies.append(time.perf_counter() - t0)
    res.requests += ok
    res.hashes += len(body) // 32 * ok
    res.errors += not ok


async def run_closed_loop(name: str, url: str, key: str, seconds: float, concurrency: int, size: int) -> PhaseResult:
    """``concurrency`` senders, each posting ``size`` hashes again as soon as the last answer came."""
    res = PhaseResult(name, seconds)
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            await _post(http, res, os.urandom(32 * size), headers)

    await _run_workers(url, worker, concurrency)
    return res


async def run_single(url: str, key: str, seconds: float, concurrency: int) -> PhaseResult:
    return await run_closed_loop("single-hash requests", url, key, seconds, concurrency, 1)


async def run_batch(url: str, key: str, seconds: float, concurrency: int, size: int, rate: float) -> PhaseResult:
    if rate:
        return await run_paced(url, key, seconds, size, rate)
    return await run_closed_loop(
        f"{size}-hash batches, closed loop x{concurrency}", url, key, seconds, concurrency, size
    )


async def run_paced(url: str, key: str, seconds: float, size: int, rate: float) -> PhaseResult:
    """Open loop: start ``rate`` requests a second whatever the latency (latency is not hidden by back-off)."""
    res = PhaseResult(f"{size}-hash batches at {rate:g}/s", seconds)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
    bodies = [os.urandom(32 * size) for _ in range(64)]

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        start = time.perf_counter()
        tasks = []
        n = int(seconds * rate)
        for k in range(n):
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # a fresh salt-free body each time would cost the client more than the server; vary the first bytes
            body = os.urandom(16) + bodies[k % len(bodies)][16:]
            tasks.append(asyncio.create_task(_post(http, res, body, headers)))
        await asyncio.gather(*tasks)
        res.seconds = time.perf_counter() - start
    return res


async def run_anchored(url: str, key: str, seconds: float, concurrency: int) -> PhaseResult:
    res = PhaseResult("submit to anchored", seconds)
    deadline = time.perf_counter() + seconds
    auth = {"Authorization": f"Bearer {key}"}

    async def worker(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with http.post("/hashes", json={"hashes": [os.urandom(32).hex()]}, headers=auth) as resp:
                body = await resp.json()
            res.latencies.append(time.perf_counter() - t0)
            proof_id = body["hashes"][0]["proof_id"]
            params = {"wait": "anchored", "timeout": "30"}
            async with http.get(f"/proofs/{proof_id}", params=params, headers=auth) as resp:
                doc = await resp.json()
            if doc.get("state") == "anchored":
                res.anchored.append(time.perf_counter() - t0)
                res.requests += 1
                res.hashes += 1
            else:
                res.errors += 1

    await _run_workers(url, worker, concurrency)
    return res


WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_hashes.lua"


def run_wrk(url: str, key: str, seconds: float, connections: int, size: int) -> PhaseResult:
    """A closed loop driven by wrk (one thread, ``connections`` connections), ``size`` hashes per request."""
    name = "single-hash requests (wrk)" if size == 1 else f"{size}-hash batches, closed loop x{connections} (wrk)"
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "-s", str(WRK_SCRIPT), url]
    try:
        out = subprocess.run(
            cmd, env={**os.environ, "KEY": key, "HASHES": str(size)}, capture_output=True, text=True, check=True
        ).stdout
    except FileNotFoundError:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian), or leave out the wrk phases") from None
    m = re.search(r"RESULT requests=(\d+) errors=(\d+) p50_ms=([\d.]+) p99_ms=([\d.]+) seconds=([\d.]+)", out)
    if m is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, errors = int(m[1]), int(m[2])
    res = PhaseResult(name, float(m[5]), requests - errors, (requests - errors) * size, errors)
    res.reported = {0.5: float(m[3]), 0.99: float(m[4])}
    return res


async def _run_workers(url: str, worker: Callable[[aiohttp.ClientSession], Awaitable[None]], concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))


def table(results: list[PhaseResult]) -> str:
    head = ["phase", "requests/s", "hashes/s", "ack p50 ms", "ack p99 ms", "anchored p50 s", "anchored p99 s", "errors"]
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                f"{r.requests / r.seconds:,.0f}",
                f"{r.hashes / r.seconds:,.0f}",
                f"{r.pct(r.latencies, 0.50):.1f}",
                f"{r.pct(r.latencies, 0.99):.1f}",
                f"{r.pct(r.anchored, 0.50) / 1000:.3f}" if r.anchored else "-",
                f"{r.pct(r.anchored, 0.99) / 1000:.3f}" if r.anchored else "-",
                str(r.errors),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, url: str, key: str) -> list[PhaseResult]:
    results = []
    for phase in args.phases.split(","):
        print(f"-- {phase}: {args.seconds:g} s ...", file=sys.stderr, flush=True)
        if phase == "single":
            results.append(await run_single(url, key, args.seconds, args.concurrency))
        elif phase == "batch":
            results.append(
                await run_batch(url, key, args.seconds, args.batch_concurrency, args.batch_size, args.batch_rate)
            )
        elif phase == "paced":
            results.append(await run_paced(url, key, args.seconds, args.batch_size, args.paced_rate))
        elif phase in ("wrk-single", "wrk-batch"):
            single = phase == "wrk-single"
            conns, size = (args.concurrency, 1) if single else (args.batch_concurrency, args.batch_size)
            results.append(await asyncio.to_thread(run_wrk, url, key, args.seconds, conns, size))
        elif phase == "anchored":
            results.append(await run_anchored(url, key, args.seconds, args.anchored_concurrency))
        else:
            raise SystemExit(f"unknown phase {phase!r}: use single, batch, paced, anchored, wrk-single, wrk-batch")
        r = results[-1]
        print(f"   {r.requests:,} requests, {r.hashes:,} hashes, {r.errors} errors", file=sys.stderr, flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="target an already running service (needs --key)")
    p.add_argument("--key", help="API key with the submit and read scopes")
    p.add_argument("--phases", default="single,batch,paced,anchored")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32, help="connections for single-hash requests")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--batch-concurrency", type=int, default=8, help="closed-loop batch senders")
    p.add_argument("--batch-rate", type=float, default=0, help="batch phase open loop at this rate (0: closed loop)")
    p.add_argument("--paced-rate", type=float, default=100, help="paced phase: batch requests per second")
    p.add_argument("--anchored-concurrency", type=int, default=50)
    p.add_argument("--window", type=float, default=1.0, help="window of the server this script starts")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = p.parse_args()
    if args.url:
        if not args.key:
            p.error("--url needs --key")
        results = asyncio.run(main_async(args, args.url, args.key))
    else:
        with local_server(args.window) as (url, key):
            results = asyncio.run(main_async(args, url, key))
    print(table(results))
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["phase", "seconds", "requests", "hashes", "errors", "ack_p50_ms", "ack_p99_ms"])
            for r in results:
                w.writerow(
                    [
                        r.name,
                        r.seconds,
                        r.requests,
                        r.hashes,
                        r.errors,
                        r.pct(r.latencies, 0.5),
                        r.pct(r.latencies, 0.99),
                    ]
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
