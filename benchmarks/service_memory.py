"""What the service holds per acknowledged hash and per open long poll, measured on a real server.

Starts ``receipt-service serve`` on the embedded defaults (SQLite) with a long window, so nothing is
anchored while it measures, then:
  1. posts ``--hashes`` hashes in 1000-hash batches and reads the store's growth on disk and the
     server's RSS growth per hash;
  2. opens ``--polls`` long polls (GET /proofs/{id}?wait=anchored) that stay open and reads the RSS
     growth per poll.
Prints one table.

    python benchmarks/service_memory.py [--hashes 200000] [--polls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import local_server

PAGE = os.sysconf("SC_PAGE_SIZE")


def _server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the service)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                inode = parts[9]
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
            except OSError:
                continue
    raise SystemExit(f"no process listens on port {port}")


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _data_dir(pid: int) -> Path:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(args[args.index(b"--data-dir") + 1].decode())


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def _measure(url: str, key: str, hashes: int, polls: int) -> list[list[str]]:
    pid = _server_pid(int(url.rsplit(":", 1)[1]))
    data = _data_dir(pid)
    auth = {"Authorization": f"Bearer {key}"}
    rows: list[list[str]] = []
    connector = aiohttp.TCPConnector(limit=polls + 16)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        warm = {**auth, "Content-Type": "application/octet-stream"}
        async with http.post("/hashes", data=os.urandom(32 * 1000), headers=warm) as r:
            assert r.status == 202, await r.text()
        await asyncio.sleep(1.0)
        rss0, disk0 = _rss(pid), _disk(data)
        for k in range(hashes // 1000):
            async with http.post("/hashes", data=os.urandom(32 * 1000), headers=warm) as r:
                assert r.status == 202, await r.text()
            if (k + 1) % 50 == 0:
                print(f"  {(k + 1) * 1000:,} hashes acknowledged", file=sys.stderr)
        await asyncio.sleep(2.0)
        rss1, disk1 = _rss(pid), _disk(data)
        n = hashes // 1000 * 1000
        rows.append(["store on disk (SQLite, WAL included)", f"{(disk1 - disk0) / n:,.0f} B/hash", f"{n:,} hashes"])
        rows.append(
            [
                "service RSS growth while acknowledging",
                f"{(rss1 - rss0) / n:,.1f} B/hash",
                f"{rss1 / 2**20:,.0f} MiB after",
            ]
        )

        async def poll(proof_id: str) -> None:
            async with http.get(
                f"/proofs/{proof_id}", params={"wait": "anchored", "timeout": "120"}, headers=auth
            ) as r:
                await r.read()

        async with http.post("/hashes", data=os.urandom(32 * 1000), headers=warm) as r:
            fresh = [h["proof_id"] for h in (await r.json())["hashes"]]  # in the open window: polls stay open
        before = _rss(pid)
        tasks = [asyncio.create_task(poll(fresh[i % len(fresh)])) for i in range(polls)]
        await asyncio.sleep(3.0 + polls / 1000)
        after = _rss(pid)
        rows.append(
            ["one open long poll (wait=anchored)", f"{(after - before) / polls:,.0f} B/poll", f"{polls:,} open at once"]
        )
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hashes", type=int, default=200_000)
    p.add_argument("--polls", type=int, default=2000)
    args = p.parse_args()
    t0 = time.perf_counter()
    with local_server(600.0) as (url, key):  # a 10-minute window: nothing closes while measuring
        rows = asyncio.run(_measure(url, key, args.hashes, args.polls))
    head = ["what", "cost", "measured over"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
