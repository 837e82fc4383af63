"""A treatment history an insurer checks: bundle size and verification time for a long subject log.

    python benchmarks/history_bundle.py [--records 10000] [--subjects 1000]

The real service core (an SQLite lane for medical-history, its window clock, the local ledger)
takes the subject's records in requests of 1,000 beside one record each for ``--subjects`` other
subjects (so the heads tree is not trivial), closes a window after each request, anchors it, and
serves the bundle; the verifier then checks it on one core (best of 3). Targets (issue 12): bundle
under 2 MB, verification under 1 s. Per-record figures sit beside the per-receipt validation time
of the paper's Fig. 6 reproduction (benchmarks/paper_eval.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import paper_eval

from receipt_service.anchors import LocalLedgerBackend
from receipt_service.config import Settings
from receipt_service.history import history_bundle, parse_as_of
from receipt_service.lanes import make_lane
from receipt_service.metrics import Metrics
from receipt_service.stores.base import Batch
from receipt_service.stores.sqlite import SQLiteStore
from receipt_verifier._progress import table
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id

from _common import best_of

SUBJECT = "did:example:patient-benchmark-0001"


async def build(data: Path, records: int, others: int) -> tuple[dict[str, object], LocalLedgerBackend]:
    store = SQLiteStore(data, name="receipts.medical-history.sqlite3", domain="medical-history")
    ledger = LocalLedgerBackend(data)
    lane = make_lane("medical-history", store, [ledger], Settings(data_dir=data), Metrics())
    await lane.aggregator.start()
    try:

        async def add(subject: str, n: int) -> None:
            hashes = [os.urandom(32) for _ in range(n)]
            ids = lane.issuer.issue_batch(hashes, time.time_ns())
            batch = Batch("clinic", ids.first_ticks, ids.proof_id_bytes, b"".join(hashes), os.urandom(16 * n), subject)
            await store.add_batch(batch)

        for i in range(others):
            await add(f"did:example:patient-other-{i:06d}", 1)
        done = 0
        while done < records:
            n = min(1000, records - done)
            await add(SUBJECT, n)
            await lane.aggregator.close_window()
            done += n
            print(f"  {done:,} of {records:,} records in closed windows", file=sys.stderr)
        while (await store.stats()).pending_anchors:
            await asyncio.sleep(0.05)
        return await history_bundle(lane, SUBJECT, parse_as_of(None)), ledger
    finally:
        await lane.aggregator.drain(30)
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--subjects", type=int, default=1_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        t = time.perf_counter()
        bundle, ledger = asyncio.run(build(Path(tmp), args.records, args.subjects))
        served = time.perf_counter() - t
        text = json.dumps(bundle)
        keys = {key_id(ledger.ledger.public_key): ledger.ledger.public_key}
        report, _ = verify_history(json.loads(text), keys)
        assert report.complete, report.problems[:3]
        check = best_of(3, lambda: verify_history(json.loads(text), keys))
    print("  the paper's Fig. 6 measure for comparison: 10,000 receipts checked one by one ...", file=sys.stderr)
    _, per_receipt = paper_eval.run(args.records)
    size_mb = len(text) / 1e6
    rows = [
        ["records in the history", f"{args.records:,}", ""],
        ["other subjects in the heads tree", f"{args.subjects:,}", ""],
        [
            "bundle size",
            f"{size_mb:.2f} MB ({len(text) / args.records:.0f} B/record)",
            "< 2 MB: " + ("met" if size_mb < 2 else "MISSED"),
        ],
        [
            "verification, one core (best of 3)",
            f"{check:.3f} s ({check / args.records * 1e3:.3f} ms/record)",
            "< 1 s: " + ("met" if check < 1 else "MISSED"),
        ],
        [
            "beside: Fig. 6 validation, receipt by receipt (same run)",
            f"{per_receipt * args.records:.3f} s ({per_receipt * 1e3:.3f} ms/record)",
            f"history check {per_receipt * args.records / check:.1f}x faster",
        ],
        ["service: ingest, windows, anchors, bundle", f"{served:.1f} s", ""],
    ]
    print(table(["history", "figure", "target"], rows))


if __name__ == "__main__":
    main()
