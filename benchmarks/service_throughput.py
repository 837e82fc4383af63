"""Acknowledged requests per second on the embedded defaults, side by side in one run: the service
driven by the Python load client and by wrk (one thread each), optionally also a second checkout of
the service (``--compare DIR``, for example ``git worktree add /tmp/before HEAD~1``) for ratios
measured in the same run.

    python benchmarks/service_throughput.py [--seconds 8] [--clients python,wrk] [--workers 1,2]
        [--connections 32] [--compare DIR]

``--workers`` runs each phase against ``serve --workers N`` for each N listed (1: one process), side by
side in the same run (a ``--compare`` checkout runs one process only).

Single-hash requests (32 connections) and 1000-hash batches (8 connections), each acknowledged only
once durable in SQLite. Issue 25's targets: >= 10,000 single-hash requests/s with ack p99 <= 20 ms and
>= 300,000 hashes/s in batches, on this 2-core machine with the load client on it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from pathlib import Path

from _common import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import PhaseResult, local_server, run_batch, run_single, run_wrk


def _phases(url: str, key: str, client: str, seconds: float, conns: int) -> list[PhaseResult]:
    if client == "wrk":
        return [run_wrk(url, key, seconds, conns, 1), run_wrk(url, key, seconds, 8, 1000)]
    return [
        asyncio.run(run_single(url, key, seconds, conns)),
        asyncio.run(run_batch(url, key, seconds, 8, 1000, 0)),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", default="python,wrk")
    p.add_argument("--workers", default="1", help="comma-separated worker counts (serve --workers N)")
    p.add_argument("--connections", type=int, default=32, help="connections for single-hash requests")
    p.add_argument("--compare", type=Path, help="another checkout of the repository, measured after this one")
    args = p.parse_args()
    rows: list[list[str]] = []
    base: dict[tuple[str, str], float] = {}
    trees = [("this checkout", Path(__file__).resolve().parents[1])]
    if args.compare is not None:
        trees.append((str(args.compare), args.compare.resolve()))
    for label, tree in trees:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "verifier" / "src")])
        for client, workers in itertools.product(args.clients.split(","), args.workers.split(",")):
            if workers != "1" and tree != trees[0][1]:  # the other checkout may not know --workers
                continue
            print(f"-- {label}, client {client}, {workers} worker(s)", file=sys.stderr, flush=True)
            extra = ("--workers", workers) if workers != "1" else ()
            with local_server(1.0, *extra) as (url, key):
                phases = _phases(url, key, client, args.seconds, args.connections)
                for kind, r in zip(("single", "batch"), phases, strict=True):
                    value = (r.requests if kind == "single" else r.hashes) / r.seconds
                    ref = base.setdefault((kind, client), value)
                    rows.append(
                        [
                            label,
                            client,
                            workers,
                            "single-hash requests/s" if kind == "single" else "hashes/s in 1000-hash batches",
                            f"{value:,.0f}",
                            f"{r.pct(r.latencies, 0.5):.1f}",
                            f"{r.pct(r.latencies, 0.99):.1f}",
                            f"{value / ref:.2f}x",
                            str(r.errors),
                        ]
                    )
    head = ["service", "client", "workers", "figure", "value", "ack p50 ms", "ack p99 ms", "vs first", "errors"]
    print(markdown_table(head, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
