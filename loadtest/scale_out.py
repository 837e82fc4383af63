"""Ingest on the SQLite store beside the Redis store, and one against two and three instances on one Redis.

Same client, same run, same machine: starts a redis-server (AOF, appendfsync always) and the service
processes itself, then for each setup runs the load client's phases against every instance at once
(the connections split evenly) and prints a table; --csv and --plot write the figures.

    python loadtest/scale_out.py                          # 5 s a phase
    python loadtest/scale_out.py --seconds 10 --csv out/scale.csv --plot out/scale.png
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadclient import CLI, PhaseResult, _wait_for_port, run_closed_loop

SETUPS = [("sqlite", 1), ("redis", 1), ("redis", 2), ("redis", 3)]


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A redis-server with the durability the service requires."""
    port = 23000 + os.getpid() % 4000  # below the Fabric test network (27050 on)
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-load-truncated",
            "no",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.RedisError:
            asyncio.run(asyncio.sleep(0.05))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


@contextmanager
def instances(tmp: Path, store: str, n: int, window: float) -> Iterator[tuple[list[str], str]]:
    """``n`` service processes on one store (their own data directories, one ledger key); (urls, key)."""
    dirs = [tmp / f"i{i}" for i in range(n)]
    store_args = [] if store == "sqlite" else ["--store", store]
    key = subprocess.run(
        [*CLI, "keys", "create", "--tenant", "load", "--data-dir", str(dirs[0]), *store_args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with ExitStack() as stack:
        urls = []
        for i, d in enumerate(dirs):
            if i:
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(dirs[0] / "ledger-key.pem", d / "ledger-key.pem")
            cmd = [*CLI, "serve", "--data-dir", str(d), "--port", "0", "--window-seconds", str(window), *store_args]
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            stack.callback(_stop, proc)
            urls.append(_wait_for_port(proc))
            if i == 0 and store == "sqlite":
                break  # one process owns a SQLite file
        yield urls, key


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=120)


async def spread(name: str, urls: list[str], key: str, seconds: float, concurrency: int, size: int) -> PhaseResult:
    """The closed-loop phase against every instance at once, connections split evenly; merged."""
    parts = await asyncio.gather(
        *(run_closed_loop(name, u, key, seconds, max(1, concurrency // len(urls)), size) for u in urls)
    )
    out = PhaseResult(name, seconds)
    for p in parts:
        out.requests += p.requests
        out.hashes += p.hashes
        out.errors += p.errors
        out.latencies += p.latencies
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--csv", type=Path)
    p.add_argument("--plot", type=Path, help="bar chart of the figures (PNG)")
    args = p.parse_args()
    rows: list[tuple[str, PhaseResult, PhaseResult]] = []
    with tempfile.TemporaryDirectory(prefix="receipt-scale-") as tmp_text:
        tmp = Path(tmp_text)
        (tmp / "redis").mkdir()
        with redis_server(tmp / "redis") as url:
            for store, n in SETUPS:
                label = f"{store}, {n} instance{'s' if n > 1 else ''}"
                print(f"-- {label}: single-hash then 1000-hash batches, {args.seconds:g} s each", file=sys.stderr)
                redis.Redis.from_url(url).flushall()
                work = tmp / f"{store}-{n}"
                with instances(work, "sqlite" if store == "sqlite" else url, n, args.window) as (urls, key):
                    single = asyncio.run(spread("single", urls, key, args.seconds, 32, 1))
                    batch = asyncio.run(spread("batch", urls, key, args.seconds, 8, 1000))
                rows.append((label, single, batch))
                print(
                    f"   {single.requests / single.seconds:,.0f} req/s, {batch.hashes / batch.seconds:,.0f} hashes/s",
                    file=sys.stderr,
                )
    head = [
        "setup",
        "single req/s",
        "single p99 ms",
        "batch hashes/s",
        "batch p99 ms",
        "errors",
        "vs sqlite (single, batch)",
    ]
    base_single = rows[0][1].requests / rows[0][1].seconds
    base_batch = rows[0][2].hashes / rows[0][2].seconds
    table = []
    for label, s, b in rows:
        rs, hb = s.requests / s.seconds, b.hashes / b.seconds
        table.append(
            [
                label,
                f"{rs:,.0f}",
                f"{s.pct(s.latencies, 0.99):.1f}",
                f"{hb:,.0f}",
                f"{b.pct(b.latencies, 0.99):.1f}",
                str(s.errors + b.errors),
                f"{rs / base_single:.2f}x, {hb / base_batch:.2f}x",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *table, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            csv.writer(f).writerows([head, *table])
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        labels = [r[0] for r in rows]
        axes[0].bar(labels, [s.requests / s.seconds for _, s, _ in rows])
        axes[0].set_title("single-hash requests/s")
        axes[1].bar(labels, [b.hashes / b.seconds for _, _, b in rows])
        axes[1].set_title("hashes/s in 1000-hash batches")
        for ax in axes:
            ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
