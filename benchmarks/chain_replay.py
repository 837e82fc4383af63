"""Replay of a lane's chained windows (spec §14.7-§14.9), pure: windows per second of ``chain.replay``.

    python benchmarks/chain_replay.py [--windows 1000] [--subjects 10000] [--changed 100]

Window 0 brings ``--subjects`` subjects (1 to 50 records each) into the empty heads; each later window
grows ``--changed`` random logs by 1 to 5 records (5% of them new subjects instead), with the
service's transition builder and the chain record the chaincode would write. The replay (sequence,
previous hash, time, record, proof hash, transition proof, and the successor rule on Fabric
positions) is timed best of 3; building the windows is not timed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta

from receipt_service.transition import build_transition, consistency_from_frontier, successor_heads
from receipt_verifier._progress import Progress, table
from receipt_verifier.chain import ChainWindow, replay
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads, empty_heads
from receipt_verifier.logs import frontier_append, frontier_root

from _common import best_of

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def build(windows: int, subjects: int, changed: int, seed: int = 7) -> tuple[list[ChainWindow], int]:
    """The lane's windows and the total JSON size of their transition proofs."""
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    logs: dict[bytes, tuple[int, list[bytes]]] = {}  # key -> (size, compact range)
    heads: IndexedHeads = empty_heads()
    out: list[ChainWindow] = []
    record = b""
    proof_bytes = 0
    with Progress(windows, "building windows", enabled=None) as bar:
        for seq in range(windows):
            grown: dict[bytes, tuple[int, bytes]] = {}
            consistency: dict[bytes, list[bytes]] = {}
            new_keys = [rng.randbytes(32) for _ in range(subjects if seq == 0 else changed // 20)]
            for key in new_keys:
                frontier: list[bytes] = []
                size = rng.randint(1, 50) if seq == 0 else 1
                for j in range(size):
                    frontier = frontier_append(frontier, j, rng.randbytes(32))
                logs[key] = (size, frontier)
                grown[key] = (size, frontier_root(frontier))
            if seq:
                for key in rng.sample(sorted(logs.keys() - set(new_keys)), changed - len(new_keys)):
                    size, frontier = logs[key]
                    values = [rng.randbytes(32) for _ in range(rng.randint(1, 5))]
                    consistency[key] = consistency_from_frontier(frontier, size, values)
                    for j, v in enumerate(values):
                        frontier = frontier_append(frontier, size + j, v)
                    logs[key] = (size + len(values), frontier)
                    grown[key] = logs[key][0], frontier_root(frontier)
            new = successor_heads(heads, grown)
            proof = json.dumps(build_transition(heads, new, consistency), separators=(",", ":"))
            proof_bytes += len(proof)
            start, end = t0 + timedelta(minutes=seq), t0 + timedelta(minutes=seq + 1)
            trees = [{"index": 0, "root": leaf_hash(rng.randbytes(32)).hex(), "size": changed}]
            args = {
                "lane": "medical-history",
                "seq": seq,
                "prev": hashlib.sha256(record).hexdigest() if seq else "0" * 64,
                "window_id": f"w{seq}",
                "trees": trees,
                "heads_root": new.root.hex(),
                "heads_size": new.size,
                "window_start": start.strftime(STAMP),
                "window_end": end.strftime(STAMP),
            }
            tx_id = rng.randbytes(32).hex()
            doc = {
                "v": 1,
                **args,
                "proof_hash": hashlib.sha256(proof.encode()).hexdigest(),
                "tx_id": tx_id,
                "tx_time": end.strftime(STAMP),
            }
            record = json.dumps(doc, separators=(",", ":")).encode()
            out.append(
                ChainWindow(
                    lane="medical-history",
                    seq=seq,
                    prev=str(args["prev"]),
                    record=record,
                    window_id=f"w{seq}",
                    window_start=str(args["window_start"]),
                    window_end=str(args["window_end"]),
                    heads_root=new.root.hex(),
                    heads_size=new.size,
                    proof=proof,
                    where=f"medical-history block {seq + 5} tx 0",
                    position=(seq + 5, 0),
                    read_version=(seq + 4, 0) if seq else None,
                    trees=trees,
                    tx_id=tx_id,
                )
            )
            heads = new
            bar.advance()
    return out, proof_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=1000)
    p.add_argument("--subjects", type=int, default=10_000)
    p.add_argument("--changed", type=int, default=100)
    args = p.parse_args()
    t = time.perf_counter()
    windows, proof_bytes = build(args.windows, args.subjects, args.changed)
    print(f"built {len(windows):,} windows in {time.perf_counter() - t:,.1f} s", file=sys.stderr)
    report = replay(windows)
    assert report.ok and report.lanes["medical-history"].checked == len(windows), report.to_dict()["lanes"][0]
    later = windows[1:]
    all_time = best_of(3, lambda: replay(windows))
    # the steady state: windows after the first (which brings every subject in at once)
    first_time = best_of(3, lambda: replay(windows[:1]))
    rows = [
        [
            f"{len(windows):,}",
            f"{args.subjects:,}",
            f"{args.changed:,}",
            f"{(proof_bytes - len(windows[0].proof)) / max(len(later), 1):,.0f}",
            f"{all_time:,.2f}",
            f"{len(windows) / all_time:,.0f}",
            f"{len(later) / max(all_time - first_time, 1e-9):,.0f}",
        ]
    ]
    headers = [
        "windows",
        "subjects",
        "changed/window",
        "proof JSON/window (bytes)",
        "replay (s)",
        "windows/s",
        "windows/s after window 0",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
