"""The service's memory over a long run under steady load: is RSS flat?

Starts ``receipt-service serve`` on the embedded defaults (SQLite, local ledger, 1 s windows) and for
``--seconds`` drives it with single-hash requests at ``--single-rate`` per second, 1000-hash batches at
``--batch-rate`` per second and ``--polls`` clients that each submit a hash and wait for its receipt
(``?wait=anchored``), over and over. Samples the server's RSS every ``--every`` seconds. Prints a table
by minute (with SQLite's heap and the WAL files on disk, from ``/metrics``) and the growth over the second
half of the run (where start-up caches have filled), and writes ``benchmarks/out/service_soak.png``.
Issue 25's target: RSS flat over a 10-minute run.

    python benchmarks/service_soak.py [--seconds 600] [--single-rate 2000] [--batch-rate 20] [--polls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from service_memory import _rss, _server_pid

from _common import OUT, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import local_server


@dataclass
class Soak:
    acked: int = 0  # hashes acknowledged
    errors: int = 0
    anchored: int = 0  # long polls answered with an anchored receipt
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, RSS bytes, hashes acked)
    anon: list[int] = field(default_factory=list)  # RssAnon bytes, one per sample
    sqlite: list[int] = field(default_factory=list)  # SQLite's own heap (receipt_sqlite_heap_bytes), per sample
    wal: list[int] = field(default_factory=list)  # the WAL files on disk (receipt_sqlite_wal_bytes), per sample


async def _post(http: aiohttp.ClientSession, soak: Soak, body: bytes, headers: dict[str, str]) -> None:
    try:
        async with http.post("/hashes", data=body, headers=headers) as resp:
            await resp.read()
            if resp.status == 202:
                soak.acked += len(body) // 32
            else:
                soak.errors += 1
    except aiohttp.ClientError:
        soak.errors += 1


async def _paced(
    http: aiohttp.ClientSession, soak: Soak, rate: float, size: int, headers: dict[str, str], until: float
) -> None:
    """Requests of ``size`` hashes at ``rate`` per second (open loop: a slow server does not slow it)."""
    if rate <= 0:
        return
    tick, sent, start, tasks = 0.01, 0, time.perf_counter(), set()
    while (now := time.perf_counter()) < until:
        due = int((now - start) * rate) - sent
        for _ in range(due):
            t = asyncio.create_task(_post(http, soak, os.urandom(32 * size), headers))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        sent += due
        await asyncio.sleep(tick)
    await asyncio.gather(*tasks)


async def _poller(http: aiohttp.ClientSession, soak: Soak, auth: dict[str, str], until: float) -> None:
    """Submit one hash, wait for its anchored receipt, again until the end."""
    while time.perf_counter() < until:
        try:
            async with http.post("/hashes", json={"hashes": [os.urandom(32).hex()]}, headers=auth) as resp:
                proof_id = (await resp.json())["hashes"][0]["proof_id"]
            soak.acked += 1
            params = {"wait": "anchored", "timeout": "30"}
            async with http.get(f"/proofs/{proof_id}", params=params, headers=auth) as resp:
                soak.anchored += (await resp.json()).get("state") == "anchored"
        except (aiohttp.ClientError, KeyError):
            soak.errors += 1
            await asyncio.sleep(1)


def _anon(pid: int) -> int:
    """RssAnon: the process's own heap (Python objects, SQLite's page caches), not mapped files."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


async def _gauges(http: aiohttp.ClientSession, *names: str) -> list[int]:
    """Gauges of the server's ``/metrics`` (-1 for one that cannot be read)."""
    try:
        async with http.get("/metrics") as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return [-1] * len(names)
    values = {x.split()[0]: int(float(x.split()[1])) for x in text.splitlines() if x.startswith(names)}
    return [values.get(name, -1) for name in names]


async def _take(http: aiohttp.ClientSession, pid: int, soak: Soak, at: float) -> None:
    soak.samples.append((at, _rss(pid), soak.acked))
    soak.anon.append(_anon(pid))
    heap, wal = await _gauges(http, "receipt_sqlite_heap_bytes", "receipt_sqlite_wal_bytes")
    soak.sqlite.append(heap)
    soak.wal.append(wal)


async def _sample(http: aiohttp.ClientSession, pid: int, soak: Soak, every: float, until: float, start: float) -> None:
    while (now := time.perf_counter()) < until:
        await _take(http, pid, soak, now - start)
        mib, anon, lite = soak.samples[-1][1] / 2**20, soak.anon[-1] / 2**20, soak.sqlite[-1] / 2**20
        line = (
            f"\r  {now - start:5.0f} s  RSS {mib:6.1f} MiB (anonymous {anon:6.1f}, SQLite {lite:5.1f})"
            f"  WAL {soak.wal[-1] / 2**20:5.1f} MiB"
            f"  {soak.acked:,} hashes"
        )
        print(line, end="", file=sys.stderr, flush=True)
        await asyncio.sleep(every)
    print(file=sys.stderr)


async def _soak(url: str, key: str, args: argparse.Namespace) -> Soak:
    soak = Soak()
    pid = _server_pid(int(url.rsplit(":", 1)[1].split("/")[0]))
    auth = {"Authorization": f"Bearer {key}"}
    octets = {**auth, "Content-Type": "application/octet-stream"}
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        until = start + args.seconds
        await asyncio.gather(
            _sample(http, pid, soak, args.every, until + 0.001, start),
            _paced(http, soak, args.single_rate, 1, octets, until),
            _paced(http, soak, args.batch_rate, 1000, octets, until),
            *[_poller(http, soak, auth, until) for _ in range(args.polls)],
        )
        await _take(http, pid, soak, time.perf_counter() - start)
    return soak


def _plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    minutes = [s / 60 for s, _, _ in soak.samples]
    ax.plot(minutes, [r / 2**20 for _, r, _ in soak.samples], label="RSS")
    ax.plot(minutes, [a / 2**20 for a in soak.anon], label="anonymous")
    ax.plot(minutes, [q / 2**20 for q in soak.sqlite], label="SQLite's heap")
    ax.plot(minutes, [w / 2**20 for w in soak.wal], label="WAL on disk")
    ax.legend(loc="lower right")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB (server memory; WAL on disk)")
    ax.set_ylim(bottom=0)
    ax.set_title("receipt-service memory and WAL under steady load (embedded defaults)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--single-rate", type=float, default=2000, help="single-hash requests per second")
    p.add_argument("--batch-rate", type=float, default=20, help="1000-hash requests per second")
    p.add_argument("--polls", type=int, default=20, help="clients that submit and wait for the receipt")
    p.add_argument("--every", type=float, default=5, help="seconds between RSS samples")
    args = p.parse_args()
    with local_server(1.0) as (url, key):
        soak = asyncio.run(_soak(url, key, args))
    rows = []
    for minute in range(int(args.seconds // 60) + 1):
        i = min(range(len(soak.samples)), key=lambda j: abs(soak.samples[j][0] - 60 * minute))
        _, rss, acked = soak.samples[i]
        rows.append(
            [
                str(minute),
                f"{rss / 2**20:.1f}",
                f"{soak.anon[i] / 2**20:.1f}",
                f"{soak.sqlite[i] / 2**20:.1f}",
                f"{soak.wal[i] / 2**20:.1f}",
                f"{acked:,}",
            ]
        )
    half = [s for s in soak.samples if s[0] >= args.seconds / 2]
    first, last = half[0], half[-1]
    growth = (last[1] - first[1]) / 2**20
    per_million = (last[1] - first[1]) / max(1, last[2] - first[2]) * 1e6 / 2**20
    head = [
        "minute",
        "RSS MiB",
        "of which anonymous MiB",
        "SQLite's heap MiB",
        "WAL on disk MiB",
        "hashes acknowledged",
    ]
    print(markdown_table(head, rows))
    print(
        f"\nsecond half: RSS {first[1] / 2**20:.1f} -> {last[1] / 2**20:.1f} MiB ({growth:+.1f} MiB,"
        f" {per_million:+.2f} MiB per million hashes); peak {max(r for _, r, _ in soak.samples) / 2**20:.1f} MiB;"
        f" {soak.acked:,} hashes acknowledged, {soak.anchored:,} long polls answered anchored, {soak.errors} errors;"
        f" largest WAL {max(soak.wal) / 2**20:.1f} MiB"
    )
    _plot(soak, OUT / "service_soak.png")
    print(f"plot: {OUT / 'service_soak.png'}")
    return 0 if soak.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
