"""Tree build with every branch, hashlib (ours) beside pymerkle's InmemoryTree, in one run.

    python benchmarks/tree_build.py [--max 1000000]

Target (issue 2): 100k leaves, root and every branch, in <= 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import sys

from receipt_verifier._progress import table
from receipt_verifier.merkle import MerkleTree, all_audit_paths

from _common import best_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--max", type=int, default=1_000_000)
    p.add_argument("--pymerkle-max", type=int, default=100_000, help="largest size also run with pymerkle")
    args = p.parse_args()
    rows = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        if n > args.max:
            break
        print(f"  {n:,} leaves ...", file=sys.stderr)
        data = [os.urandom(32) for _ in range(n)]
        repeats = 3 if n <= 100_000 else 1
        build = best_of(repeats, lambda data=data: MerkleTree.from_commitments(data))
        tree = MerkleTree.from_commitments(data)
        both = best_of(repeats, lambda data=data: all_audit_paths(MerkleTree.from_commitments(data)))
        pm = "-"
        ratio = "-"
        if n <= args.pymerkle_max:
            from pymerkle import InmemoryTree

            def run_pymerkle(data: list[bytes] = data) -> None:
                t = InmemoryTree(algorithm="sha256")
                for d in data:
                    t.append_entry(d)
                t.get_root()

            pm_t = best_of(1, run_pymerkle)
            pm = f"{pm_t:.3f}"
            ratio = f"{pm_t / build:.1f}x"
        target = "<= 0.3 s: " + ("met" if both <= 0.3 else "MISSED") if n == 100_000 else ""
        rows.append(
            [f"{n:,}", f"{build:.3f}", f"{both:.3f}", f"{both / n * 1e6:.2f}", pm, ratio, target, tree.root.hex()[:12]]
        )
    print(
        table(
            [
                "leaves",
                "build s",
                "build+all branches s",
                "us/leaf",
                "pymerkle build s",
                "pymerkle/ours",
                "target",
                "root",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
