"""Acknowledged requests per second on the embedded defaults, side by side in one run: the service
driven by the Python load client and by wrk (one thread each), optionally also a second checkout of
the service (``--compare DIR``, for example ``git worktree add /tmp/before HEAD~1``) for ratios
measured in the same run.

    python benchmarks/service_throughput.py [--seconds 8] [--clients python,wrk] [--workers 1,2]
        [--connections 32] [--compare DIR [--compare-workers 1,2]] [--rounds 1]

``--workers`` runs each phase against ``serve --workers N`` for each N listed (1: one process), side by
side in the same run; ``--compare`` runs the other checkout's own service (from its directory) with the
same worker counts, or ``--compare-workers`` for a checkout from before ``serve --workers``. With
``--rounds N`` the checkouts take turns N times and the table shows medians (each round's figure
beside): this shared machine drifts by several per cent between minutes.

Single-hash requests (32 connections) and 1000-hash batches (8 connections), each acknowledged only
once durable in SQLite. Issue 25's targets: >= 10,000 single-hash requests/s with ack p99 <= 20 ms and
>= 300,000 hashes/s in batches, on this 2-core machine with the load client on it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
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
    p.add_argument("--compare", type=Path, help="another checkout of the repository, measured in the same run")
    p.add_argument(
        "--compare-workers",
        help="worker counts for the other checkout (default: --workers; 1 for a checkout before them)",
    )
    p.add_argument("--rounds", type=int, default=1, help="rounds, the checkouts taking turns in each (medians shown)")
    args = p.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = [("this checkout", here, args.workers.split(","))]
    if args.compare is not None:
        trees.append((str(args.compare), args.compare.resolve(), (args.compare_workers or args.workers).split(",")))
    runs: dict[tuple[str, str, str, str], list[tuple[float, float, float, int]]] = {}
    total = args.rounds * sum(len(w) for _, _, w in trees) * len(args.clients.split(","))
    done = 0
    for _ in range(args.rounds):
        for label, tree, worker_counts in trees:
            for client, workers in itertools.product(args.clients.split(","), worker_counts):
                done += 1
                print(f"-- [{done}/{total}] {label}, client {client}, {workers} worker(s)", file=sys.stderr, flush=True)
                extra = ("--workers", workers) if workers != "1" else ()
                with local_server(1.0, *extra, tree=tree) as (url, key):
                    phases = _phases(url, key, client, args.seconds, args.connections)
                for kind, r in zip(("single", "batch"), phases, strict=True):
                    value = (r.requests if kind == "single" else r.hashes) / r.seconds
                    p50, p99 = r.pct(r.latencies, 0.5), r.pct(r.latencies, 0.99)
                    runs.setdefault((label, client, workers, kind), []).append((value, p50, p99, r.errors))
    rows: list[list[str]] = []
    for (label, client, workers, kind), got in runs.items():
        value = statistics.median(v for v, _, _, _ in got)
        ours = runs.get((trees[0][0], client, workers, kind))
        ratio = f"{value / statistics.median(v for v, _, _, _ in ours):.2f}x" if ours else "-"
        rows.append(
            [
                label,
                client,
                workers,
                "single-hash requests/s" if kind == "single" else "hashes/s in 1000-hash batches",
                f"{value:,.0f}" + (f" ({', '.join(f'{v:,.0f}' for v, _, _, _ in got)})" if len(got) > 1 else ""),
                f"{statistics.median(x for _, x, _, _ in got):.1f}",
                f"{statistics.median(x for _, _, x, _ in got):.1f}",
                ratio,
                str(sum(e for _, _, _, e in got)),
            ]
        )
    head = ["service", "client", "workers", "figure", "value (each round)", "ack p50 ms", "ack p99 ms"]
    print(markdown_table([*head, "vs this checkout", "errors"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
