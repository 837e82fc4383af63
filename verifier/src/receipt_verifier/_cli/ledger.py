"""``receipt-verify ledger``: check a whole local ledger's chain and replay its domains' windows."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .._progress import table
from ..errors import UsageError
from ..ledger import check_ledger_chains, iter_ledger, key_id, load_public_key_file, verify_chain
from .common import EXIT_VALID


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="receipt-verify ledger", description="Check a whole local ledger file.")
    p.add_argument("ledger", type=Path)
    p.add_argument("--ledger-key", type=Path, required=True)
    p.add_argument(
        "--proofs",
        type=Path,
        metavar="FILE",
        help="ledger-proofs.jsonl beside the ledger: replay every domain's chain of windows with its proofs",
    )
    args = p.parse_args(argv)
    key = load_public_key_file(args.ledger_key)
    try:
        lines = args.ledger.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"{args.ledger}: cannot read ({exc.strerror})") from None
    entries = list(iter_ledger(lines))
    head = verify_chain(entries, key)
    print(table(["ledger", "key_id", "entries", "head"], [[str(args.ledger), key_id(key), str(len(entries)), head]]))
    chained = sorted({e.entry.domain for e in entries if e.entry.chain_seq is not None and e.entry.domain})
    if args.proofs is None:
        if chained:
            print(f"chained windows of {', '.join(chained)} not replayed: pass --proofs ledger-proofs.jsonl")
        return EXIT_VALID
    try:
        proof_lines = args.proofs.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"{args.proofs}: cannot read ({exc.strerror})") from None
    proofs = {}
    for n, line in enumerate(proof_lines, 1):
        try:
            text = str(json.loads(line)["proof"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise UsageError(f"{args.proofs} line {n} is not a window's transition proof") from None
        proofs[hashlib.sha256(text.encode("utf-8")).hexdigest()] = text
    tips = check_ledger_chains(entries, proofs)
    rows = [[d, str(t.chain_seq + 1), t.window_id, t.window_end, "append-only"] for d, t in sorted(tips.items())]
    print(table(["domain", "windows", "tip window", "tip ended", "verdict"], rows))
    return EXIT_VALID
