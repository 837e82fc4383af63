"""Receipt verification throughput on one core, fast codec beside full JSON Schema, one run.

    python benchmarks/verify_throughput.py [--receipts 20000]

Target (issue 2): >= 20,000 receipts/s on one core (receipts of one window: the ledger
signature is checked once and cached, as a batch verifier does).
"""

from __future__ import annotations

import argparse
import sys
import time

from receipt_verifier import AnchorPolicy, Verifier, parse_receipt
from receipt_verifier._progress import table
from receipt_verifier.fastpath import PathMemo

from _common import anchored_receipts


def rate(texts: list[str], verifier: Verifier, general: bool = False) -> float:
    """Receipts/s; ``general`` parses with the general codec first (skipping the one-pass path)."""
    policy = AnchorPolicy()
    t = time.perf_counter()
    for s in texts:
        verifier.verify_policy(parse_receipt(s) if general else s, policy)
    return len(texts) / (time.perf_counter() - t)


def _unshared(v: Verifier) -> Verifier:
    """A verifier that hashes every path to the root (its path memo never hits)."""
    v._paths = PathMemo(size=0)
    return v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--receipts", type=int, default=20_000)
    args = p.parse_args()
    print(f"  building {args.receipts:,} anchored receipts ...", file=sys.stderr)
    texts, ledger = anchored_receipts(args.receipts)
    fast = max(rate(texts, Verifier([ledger.public_key])) for _ in range(3))
    unshared = max(rate(texts, _unshared(Verifier([ledger.public_key]))) for _ in range(3))
    cold = rate(texts[:2000], Verifier([ledger.public_key]))
    general = max(rate(texts, Verifier([ledger.public_key]), general=True) for _ in range(3))
    sample = texts[:300]
    strict = rate(sample, Verifier([ledger.public_key], strict_schema=True))
    rows = [
        [
            "one-pass path, warm (best of 3)",
            f"{len(texts):,}",
            f"{fast:,.0f}",
            "1.0x",
            ">= 20,000/s: " + ("met" if fast >= 20_000 else "MISSED"),
        ],
        [
            "one-pass path, no path sharing between receipts",
            f"{len(texts):,}",
            f"{unshared:,.0f}",
            f"{unshared / fast:.2f}x",
            "",
        ],
        ["one-pass path, first 2,000", "2,000", f"{cold:,.0f}", f"{cold / fast:.2f}x", ""],
        [
            "general parser + branch walk (no one-pass)",
            f"{len(texts):,}",
            f"{general:,.0f}",
            f"{general / fast:.2f}x",
            "",
        ],
        ["--strict-schema (jsonschema)", f"{len(sample):,}", f"{strict:,.0f}", f"{strict / fast:.3f}x", ""],
    ]
    print(table(["mode", "receipts", "receipts/s", "vs fast", "target"], rows))


if __name__ == "__main__":
    main()
