"""``receipt-verify audit``: an insurer's audit of a folder of records and their receipts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._progress import Progress, table
from ..audit import find_items, render_html, run_audit
from ..ledger import load_public_key_file
from ..verify import AnchorPolicy, Verifier
from .common import EXIT_INVALID, EXIT_VALID, anchor_summary, load_trust_file, why


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="receipt-verify audit",
        description="Audit a folder of records (or NAME.sha256 hash files) with their NAME.receipt.json receipts.",
    )
    p.add_argument("folder", type=Path)
    p.add_argument("--trust", type=Path, metavar="FILE", help="pinned Fabric trust file")
    p.add_argument("--ledger-key", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument("--require-anchors", default="all", metavar="all|any|N")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the self-contained HTML report here")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    args = p.parse_args(argv)
    policy = AnchorPolicy.parse(args.require_anchors)
    trust = load_trust_file(args.trust) if args.trust is not None else None
    verifier = Verifier([load_public_key_file(k) for k in args.ledger_key], fabric_trust=trust)
    total = len(find_items(args.folder))
    with Progress(total, "auditing", enabled=args.progress or None) as bar:
        report = run_audit(args.folder, verifier, policy, bar.advance)
    s = report["summary"]
    rows = [
        [r["record"], "valid" if r["valid"] else "INVALID", anchor_summary(r), why(r)]
        for r in report["items"]
        if not r["valid"]
    ][:50]
    if rows:
        print(table(["record", "result", "anchors", "why"], rows))
        print()
    verified = ", ".join(f"{k}: {v}" for k, v in s["verified_anchors"].items()) or "none"
    print(
        table(
            ["records", "valid", "invalid", "verified anchors", "policy"],
            [[str(s["records"]), str(s["valid"]), str(s["invalid"]), verified, s["policy"]]],
        )
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.html is not None:
        args.html.write_text(render_html(report))
    return EXIT_VALID if s["invalid"] == 0 else EXIT_INVALID
