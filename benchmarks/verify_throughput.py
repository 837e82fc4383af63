"""Receipt verification throughput on one core: the text path beside the other paths, one run.

    python benchmarks/verify_throughput.py [--receipts 20000] [--windows 4000] [--compare DIR [--rounds 5]]

Issue 25's targets, one core: >= 50,000 receipts/s for receipts of a few windows (the ledger signature
checked once per window and cached, as a batch verifier does), >= 15,000/s when every receipt comes
from a different window (a signature per receipt). ``--compare DIR`` measures another checkout of the
repository (for example ``git worktree add /tmp/before HEAD~1``) on the same receipts in the same run:
both checkouts run the same script in fresh processes, in alternating rounds, and the ratio is of the
medians (this machine's speed drifts by a third from minute to minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receipt_verifier import AnchorPolicy, Limits, Verifier, parse_receipt
from receipt_verifier import verify as verify_module
from receipt_verifier._progress import table
from receipt_verifier.fastpath import PathMemo
from receipt_verifier.model import LocalAnchor
from receipt_verifier.textpath import TextPath

from _common import anchored_receipts, window_receipts

# Measured in the other checkout through the public API only (it may predate every internal name).
_OTHER = """
import json, sys, time
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from receipt_verifier import AnchorPolicy, Verifier
def rate(texts, key):
    v, policy, t = Verifier([key]), AnchorPolicy(), time.perf_counter()
    for s in texts:
        v.verify_policy(s, policy)
    return len(texts) / (time.perf_counter() - t)
out = {}
for name in sys.argv[1:]:
    lines = open(name).read().splitlines()
    key = load_pem_public_key(lines[0].replace("|", "\\n").encode())
    out[name] = max(rate(lines[1:], key) for _ in range(3))
print(json.dumps(out))
"""


def rate(texts: list[str], verifier: Verifier, general: bool = False) -> float:
    """Receipts/s; ``general`` parses with the general codec first (skipping the one-pass paths)."""
    policy = AnchorPolicy()
    t = time.perf_counter()
    for s in texts:
        verifier.verify_policy(parse_receipt(s) if general else s, policy)
    return len(texts) / (time.perf_counter() - t)


def _unshared(v: Verifier) -> Verifier:
    """A verifier that hashes every path to the root (its path memo never hits)."""
    v._paths = v._text._memo = PathMemo(size=0)
    return v


def _decoding(v: Verifier) -> Verifier:
    """A verifier without the text path: it decodes the JSON, then takes the one pass over the document."""
    v._text = TextPath(Limits(max_bytes=0), None)
    return v


def _side_by_side(
    trees: dict[str, Path], sets: dict[str, tuple[list[str], bytes]], rounds: int
) -> dict[str, dict[str, float]]:
    """Median (of ``rounds``) best-of-3 receipts/s per checkout and set, the checkouts taking turns."""
    seen: dict[str, dict[str, list[float]]] = {t: {label: [] for label in sets} for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        names = {}
        for label, (texts, pem) in sets.items():
            name = os.path.join(tmp, label)
            Path(name).write_text("\n".join([pem.decode().strip().replace("\n", "|"), *texts]))
            names[name] = label
        for r in range(rounds):
            for side, tree in trees.items():
                src = os.pathsep.join([str(tree / "verifier" / "src"), str(tree)])
                env = {**os.environ, "PYTHONPATH": src}
                run = [sys.executable, "-c", _OTHER, *names]
                out = subprocess.run(run, env=env, check=True, capture_output=True, cwd=tmp)
                got = {names[k]: v for k, v in json.loads(out.stdout).items()}
                for label, value in got.items():
                    seen[side][label].append(value)
                shown = ", ".join(f"{label} {value:,.0f}" for label, value in got.items())
                print(f"  round {r + 1}/{rounds}, {side}: {shown}", file=sys.stderr)
    return {side: {label: statistics.median(v) for label, v in d.items()} for side, d in seen.items()}


def _signature_rate(texts: list[str], verifier_key: Ed25519PublicKey) -> float:
    """Ledger signature checks/s alone (libsodium, as the verifier makes them), over these receipts' entries."""
    from receipt_verifier.ledger import verify_entry_signature

    anchors = [parse_receipt(s).branches[0].ops[-1].anchors[0] for s in texts]
    signed = [(a.entry, a.signature, a.entry.canonical_bytes()) for a in anchors if isinstance(a, LocalAnchor)]
    t = time.perf_counter()
    for entry, signature, canonical in signed:
        verify_entry_signature(verifier_key, entry, signature, canonical)
    return len(signed) / (time.perf_counter() - t)


def _rate_without_signatures(texts: list[str], verifier: Verifier) -> float:
    """Receipts/s with the ledger signature check left out: what everything else costs (a breakdown only)."""
    real = verify_module.verify_entry_signature
    verify_module.verify_entry_signature = lambda *args, **kw: None
    try:
        return rate(texts, verifier)
    finally:
        verify_module.verify_entry_signature = real


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--receipts", type=int, default=20_000)
    p.add_argument("--windows", type=int, default=4_000, help="receipts from distinct windows")
    p.add_argument("--compare", type=Path, help="another checkout of the repository, measured in the same run")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of the comparison (medians)")
    args = p.parse_args()
    ratios = ""
    print(f"  building {args.receipts:,} anchored receipts of one window ...", file=sys.stderr)
    texts, ledger = anchored_receipts(args.receipts)
    print(f"  building {args.windows:,} receipts of distinct windows ...", file=sys.stderr)
    spread, spread_ledger = window_receipts(args.windows)
    key, spread_key = ledger.public_key, spread_ledger.public_key
    print("  measuring ...", file=sys.stderr)
    fast = max(rate(texts, Verifier([key])) for _ in range(3))
    distinct = max(rate(spread, Verifier([spread_key])) for _ in range(3))
    rows = [
        ["text path, one window, warm (best of 3)", f"{len(texts):,}", fast, ">= 50,000/s", fast >= 50_000],
        [
            "text path, no path sharing",
            f"{len(texts):,}",
            max(rate(texts, _unshared(Verifier([key]))) for _ in range(3)),
        ],
        ["text path, first 2,000", "2,000", rate(texts[:2000], Verifier([key]))],
        [
            "decode, then one pass over the document",
            f"{len(texts):,}",
            max(rate(texts, _decoding(Verifier([key]))) for _ in range(3)),
        ],
        [
            "general parser + branch walk",
            f"{len(texts):,}",
            max(rate(texts, Verifier([key]), general=True) for _ in range(3)),
        ],
        ["--strict-schema (jsonschema)", "300", rate(texts[:300], Verifier([key], strict_schema=True))],
        ["text path, every receipt its own window", f"{len(spread):,}", distinct, ">= 15,000/s", distinct >= 15_000],
        [
            "  of it: the ledger signature alone (checks/s)",
            f"{len(spread):,}",
            max(_signature_rate(spread, spread_key) for _ in range(3)),
        ],
        [
            "  of it: everything but the signature",
            f"{len(spread):,}",
            max(_rate_without_signatures(spread, Verifier([spread_key])) for _ in range(3)),
        ],
    ]
    if args.compare is not None:
        print(f"  measuring {args.compare} ...", file=sys.stderr)
        pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        spem = spread_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        here = Path(__file__).resolve().parent.parent
        trees = {"this checkout": here, str(args.compare): args.compare.resolve()}
        both = _side_by_side(trees, {"one": (texts, pem), "spread": (spread, spem)}, args.rounds)
        mine, other = both["this checkout"], both[str(args.compare)]
        rows += [
            [
                f"side by side, median of {args.rounds} rounds: this checkout, one window",
                f"{len(texts):,}",
                mine["one"],
            ],
            [f"  {args.compare}, one window", f"{len(texts):,}", other["one"]],
            ["  this checkout, every receipt its own window", f"{len(spread):,}", mine["spread"]],
            [f"  {args.compare}, every receipt its own window", f"{len(spread):,}", other["spread"]],
        ]
        ratios = (
            f"this checkout / {args.compare}: one window {mine['one'] / other['one']:.2f}x,"
            f" every receipt its own window {mine['spread'] / other['spread']:.2f}x (medians side by side)"
        )
    out = []
    for name, count, value, *target in rows:
        met = ("met" if target[1] else "MISSED") if target else ""
        out.append([name, count, f"{value:,.0f}", f"{value / fast:.2f}x", f"{target[0]}: {met}" if target else ""])
    print(table(["mode", "receipts", "receipts/s", "vs first row", "target"], out))
    if args.compare is not None:
        print(ratios)


if __name__ == "__main__":
    main()
