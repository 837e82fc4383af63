"""The service's instructions per acknowledged request, counted, not timed: ratios a noisy machine does not move.

    python benchmarks/service_instructions.py [--requests 1000] [--connections 16] [--compare DIR]

One service process on the embedded defaults runs under valgrind (``cachegrind --cache-sim=no``), with a
window of an hour so that none closes; a Python client outside valgrind posts single-hash requests
(``application/octet-stream``, ``--connections`` at a time), then a tenth as many 1000-hash batches,
and stops the service. Each figure is the instructions of a run of W + N requests minus those of a run of W (the
start, the imports, the warm-up and the stop cancel), divided by N: every thread of the process counts,
the SQLite writer's commits among them, and so does the request's share of closing the last window
(the stop drains it: the backlog read, the tree, the commit, the local ledger's entry). Two runs of one checkout agree within about 0.1 %.
``--compare DIR`` counts another checkout of the repository (its own service, from its directory) the same way.

What it leaves out: the kernel's work (loopback networking, fsync), the load client, and time spent
waiting. Under valgrind the service runs about fifty times slower, so more requests wait per commit
than at full speed: the writer's share per request is smaller than under real load. Compare code with
code; measure seconds (``service_throughput.py``) for the targets. The service's periodic work (the WAL
checkpoint every 0.5 s, the window clock) counts per second of wall time, so run it on an otherwise idle
machine: with a second valgrind run beside it, one count rose by 2 to 4 %. Needs ``valgrind`` (Debian:
``apt-get install valgrind``); about 6 minutes, twice that with ``--compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import aiohttp

from receipt_verifier._progress import table

# (hashes per request, title, requests in the shorter run of each pair, share of --requests counted)
_MODES = [(1, "single-hash request", 200, 1), (1000, "1000-hash batch", 20, 10)]
_REFS = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


async def _post_all(url: str, key: str, requests: int, size: int, connections: int) -> int:
    """Post ``requests`` requests of ``size`` fresh hashes; the number acknowledged (202)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
    left, acked = [requests], [0]
    async with aiohttp.ClientSession(url) as http:

        async def sender() -> None:
            while left[0] > 0:
                left[0] -= 1
                async with http.post("/hashes", data=os.urandom(32 * size), headers=headers) as resp:
                    await resp.read()
                    acked[0] += resp.status == 202

        await asyncio.gather(*[sender() for _ in range(connections)])
    return acked[0]


def _count(tree: Path, requests: int, size: int, connections: int) -> int:
    """Instructions of one service process in ``tree`` that acknowledged ``requests`` requests."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "verifier" / "src")]),
        "PYTHONHASHSEED": "0",  # the same dict layouts in every run
    }
    cli = [sys.executable, "-m", "receipt_service._cli"]
    with tempfile.TemporaryDirectory(prefix="service-instructions-") as tmp:
        make_key = [*cli, "keys", "create", "--tenant", "bench", "--data-dir", tmp]
        key = subprocess.run(make_key, capture_output=True, text=True, check=True, cwd=tree, env=env).stdout.strip()
        out = os.path.join(tmp, "cachegrind.out")
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
        serve = ["serve", "--data-dir", tmp, "--port", "0", "--window-seconds", "3600", "--log-level", "INFO"]
        proc = subprocess.Popen(
            [*valgrind, *cli, *serve], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tree, env=env
        )
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            raise SystemExit(f"the service under valgrind exited with {proc.wait()} before serving")
        threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()
        try:
            acked = asyncio.run(_post_all(url, key, requests, size, connections))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=600)
        if acked != requests:
            raise SystemExit(f"only {acked} of {requests} requests were acknowledged")
        found_refs = _REFS.search(Path(out).read_text())
        if found_refs is None:
            raise SystemExit(f"valgrind wrote no instruction count to {out}")
        return int(found_refs.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="requests counted for each figure")
    p.add_argument("--connections", type=int, default=16, help="requests in flight at once")
    p.add_argument("--compare", type=Path, help="another checkout of the repository, counted the same way")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    here = Path(__file__).resolve().parent.parent
    trees = [("this checkout", here)] + ([(str(args.compare), args.compare.resolve())] if args.compare else [])
    per: dict[tuple[str, int], float] = {}
    steps, done = len(trees) * len(_MODES) * 2, 0
    for label, tree in trees:
        for size, title, warm, share in _MODES:
            counted, counts = max(1, args.requests // share), []
            for n in (warm, warm + counted):
                done += 1
                print(f"  [{done}/{steps}] {label}: {n:,} x {title} ...", file=sys.stderr, flush=True)
                counts.append(_count(tree, n, size, args.connections))
            per[label, size] = (counts[1] - counts[0]) / counted
    head = ["request", "instructions/request", "per hash"]
    if args.compare:
        head += [f"{args.compare}: per request", "this / other"]
    rows = []
    for size, title, _, _ in _MODES:
        mine = per["this checkout", size]
        row = [title, f"{mine:,.0f}", f"{mine / size:,.0f}"]
        if args.compare:
            other = per[str(args.compare), size]
            row += [f"{other:,.0f}", f"{mine / other:.3f}"]
        rows.append(row)
    print(table(head, rows))


if __name__ == "__main__":
    main()
