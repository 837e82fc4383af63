"""Transition proofs of the indexed heads tree (spec §14.6): proof size, build time and check time.

    python benchmarks/transition_proofs.py [--quick]

For 1,000 changed subjects (950 grown logs, 50 new subjects) of 100,000, and 10,000 (9,500 and 500)
of 1,000,000 (skipped with ``--quick``): the proof's JSON size, the time to build it (the grown logs'
consistency proofs from their compact ranges, then ``build_transition``), and the time to check it
(``json.loads`` and ``check_transition``, best of 3). Building the heads trees themselves is timed
apart. Logs hold 1 to 200 records before the window and gain 1 to 20 in it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from receipt_service.transition import build_transition, consistency_from_frontier, successor_heads
from receipt_verifier._progress import table
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads, check_transition
from receipt_verifier.logs import frontier_append, frontier_root

from _common import best_of


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(subjects: int, updates: int, inserts: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    _say(f"{subjects:,} subjects: making the old heads")
    keys = [rng.randbytes(32) for _ in range(subjects)]
    grown = set(rng.sample(range(subjects), updates))
    frontiers: dict[bytes, tuple[int, list[bytes]]] = {}
    entries = []
    for i, key in enumerate(keys):
        size = rng.randint(1, 200)
        if i in grown:  # a real log, kept as the service keeps it: its compact range
            frontier: list[bytes] = []
            for j in range(size):
                frontier = frontier_append(frontier, j, rng.randbytes(32))
            frontiers[key] = (size, frontier)
            entries.append((key, size, frontier_root(frontier)))
        else:
            entries.append((key, size, rng.randbytes(32)))
    t = time.perf_counter()
    old = IndexedHeads(entries)
    heads_time = time.perf_counter() - t

    _say(f"{subjects:,} subjects: building the proof ({updates:,} grown, {inserts:,} new)")
    t = time.perf_counter()
    heads: dict[bytes, tuple[int, bytes]] = {}
    consistency: dict[bytes, list[bytes]] = {}
    for key, (size, frontier) in frontiers.items():
        new_values = [rng.randbytes(32) for _ in range(rng.randint(1, 20))]
        consistency[key] = consistency_from_frontier(frontier, size, new_values)
        for j, v in enumerate(new_values):
            frontier = frontier_append(frontier, size + j, v)
        heads[key] = (size + len(new_values), frontier_root(frontier))
    for _ in range(inserts):
        heads[rng.randbytes(32)] = (1, leaf_hash(rng.randbytes(32)))
    consistency_time = time.perf_counter() - t
    t = time.perf_counter()
    new = successor_heads(old, heads)
    heads_time += time.perf_counter() - t
    t = time.perf_counter()
    proof = build_transition(old, new, consistency)
    text = json.dumps(proof, separators=(",", ":"))
    build_time = consistency_time + time.perf_counter() - t

    _say(f"{subjects:,} subjects: checking the proof")

    def check() -> None:
        check_transition(old.root, old.size, new.root, new.size, json.loads(text))

    check_time = best_of(3, check)
    parse_time = best_of(3, lambda: json.loads(text))
    summary = check_transition(old.root, old.size, new.root, new.size, json.loads(text))
    assert (summary.updated, summary.inserted) == (updates, inserts)
    return [
        f"{subjects:,}",
        f"{updates:,} + {inserts:,}",
        f"{len(text):,}",
        f"{len(proof['nodes']):,}",
        f"{build_time * 1000:,.0f}",
        f"{check_time * 1000:,.0f}",
        f"{(check_time - parse_time) * 1000:,.0f}",
        f"{heads_time / 2:,.2f}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="skip the 1,000,000-subject run")
    args = p.parse_args()
    rows = [run(100_000, 950, 50)]
    if not args.quick:
        rows.append(run(1_000_000, 9_500, 500))
    headers = [
        "subjects",
        "grown + new",
        "proof JSON (bytes)",
        "nodes",
        "build (ms)",
        "check (ms)",
        "of it check_transition (ms)",
        "heads tree build, each (s)",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
