"""A large audit through the CLI: peak memory and receipts/s of `receipt-verify` over one JSON-lines file,
one process beside every core (`--jobs`), in one run.

    python benchmarks/verify_batch.py [--receipts 1000000]

The file is written once (service receipts in 25,000-leaf trees, one local ledger); each command's
memory is the summed RSS of its whole process tree, sampled every 0.25 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
from receipt_service.receipts import build_window, render_tree
from receipt_verifier import dumps
from receipt_verifier._progress import table

from _common import submissions

PAGE = os.sysconf("SC_PAGE_SIZE")


def write_receipts(path: Path, n: int, ledger: LocalLedger, chunk: int = 25_000) -> None:
    with open(path, "w") as out:
        for start in range(0, n, chunk):
            window = f"w{start // chunk}"
            for wt in build_window(window, submissions(min(chunk, n - start)), chunk):
                root = TreeRoot(
                    window, wt.tree_index, wt.tree.size, wt.root_hex, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"
                )
                signed = ledger.append(root, "2025-01-01T00:00:01Z")
                out.writelines(
                    dumps(r).replace("\n", "") + "\n" for r in render_tree(wt, [to_anchor(ledger.key_id, signed)])
                )
            print(f"\r  written {min(start + chunk, n):,} of {n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def _tree_rss(root: int) -> int:
    """Summed RSS of a process and its descendants (found through /proc/PID/task/TID/children)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
            total += int(fields[21]) * PAGE
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def run(cmd: list[str]) -> tuple[float, int, int]:
    """(seconds, peak summed RSS, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.25)
    return time.perf_counter() - t0, peak, proc.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--receipts", type=int, default=1_000_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-batch-") as tmp:
        ledger = LocalLedger(Path(tmp) / "ledger")
        key = Path(tmp) / "key.pem"
        key.write_text(ledger.public_key_pem())
        data = Path(tmp) / "receipts.jsonl"
        print(f"writing {args.receipts:,} receipts", file=sys.stderr)
        write_receipts(data, args.receipts, ledger)
        size = data.stat().st_size
        cli = [sys.executable, "-m", "receipt_verifier._cli", str(data), "--ledger-key", str(key)]
        rows = []
        for label, extra in [
            ("one process, table", ["--jobs", "1"]),
            ("one process, --json", ["--jobs", "1", "--json"]),
            (f"--jobs {os.cpu_count()} (every core), --json", ["--json"]),
        ]:
            print(f"  {label} ...", file=sys.stderr)
            seconds, peak, rc = run([*cli, *extra])
            assert rc == 0, f"{label}: exit {rc}"
            rows.append([label, f"{args.receipts / seconds:,.0f}", f"{peak / 2**20:,.0f}", f"{seconds:.1f}"])
    print(f"{args.receipts:,} receipts, {size / 2**30:.2f} GiB of JSON lines\n")
    print(table(["command", "receipts/s", "peak RSS MiB (all processes)", "seconds"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
