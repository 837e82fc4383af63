"""``receipt-service``: the service's command line."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from receipt_verifier import AnchorPolicy, Verifier, dumps
from receipt_verifier._progress import table
from receipt_verifier.errors import Error

from .ids import ProofIdIssuer
from .ledger import LocalLedger, TreeRoot, to_anchor
from .receipts import Submission, build_window, render_tree

SAMPLE_RECORDS: list[tuple[str, bytes]] = [
    ("wearable: heart rate", b'{"type":"heart_rate","bpm":72,"device":"wrist-01"}'),
    ("wearable: steps", b'{"type":"steps","count":1043,"device":"wrist-01"}'),
    ("wearable: SpO2", b'{"type":"spo2","percent":97,"device":"ring-07"}'),
    ("wearable: sleep", b'{"type":"sleep","minutes":431,"device":"ring-07"}'),
    ("clinic: treatment note", b'{"type":"treatment_note","text":"amoxicillin 500 mg, 7 days"}'),
    ("clinic: lab result", b'{"type":"lab","test":"HbA1c","value":"5.4%"}'),
    ("insurer: claim", b'{"type":"insurance_claim","claim":"C-2025-1107","amount_eur":180}'),
]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def demo(data_dir: Path) -> int:
    """Hash sample records, aggregate, anchor to the local ledger, verify every receipt offline."""
    ledger = LocalLedger(data_dir)
    issuer = ProofIdIssuer(int.from_bytes(os.urandom(2), "big") & 0x3FFF)
    start = time.time_ns()
    subs = []
    for _, record in SAMPLE_RECORDS:
        h = hashlib.sha256(record).hexdigest()
        issued = issuer.issue(h, time.time_ns())
        subs.append(Submission(issued.proof_id, h, issued.hash_received, os.urandom(16)))
    window_id = f"w{start // 1_000_000}"
    receipts = []
    for wt in build_window(window_id, subs):
        signed = ledger.append(
            TreeRoot(window_id, wt.tree_index, wt.tree.size, wt.root_hex, _iso(start), _iso(time.time_ns())),
            _iso(time.time_ns()),
        )
        receipts += render_tree(wt, [to_anchor(ledger.key_id, signed)])
    out = data_dir / "receipts"
    out.mkdir(exist_ok=True)
    verifier = Verifier([ledger.public_key])
    rows = []
    for (label, record), receipt in zip(SAMPLE_RECORDS, receipts, strict=True):
        path = out / f"{receipt.proof_id}.json"
        path.write_text(dumps(receipt))
        result = verifier.verify_policy(path.read_bytes(), AnchorPolicy(), record=record)
        anchor = result.anchors[0]
        rows.append([label, receipt.proof_id, receipt.hash[:16] + "…", f"{anchor.type} {anchor.status.value}"])
    print(table(["record", "proof_id", "hash", "anchor"], rows))
    print(f"\n{len(receipts)} receipts in {out}; ledger {ledger.path} (key id {ledger.key_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="receipt-service", description="Health-record anchoring service.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="anchor and verify sample health records end to end")
    d.add_argument("--data-dir", type=Path, help="keep the data here (default: a temporary directory)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.data_dir is not None:
                return demo(args.data_dir)
            with tempfile.TemporaryDirectory(prefix="receipt-demo-") as tmp:
                return demo(Path(tmp))
    except Error as exc:
        print(f"receipt-service: error: {exc.diagnostics()}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
