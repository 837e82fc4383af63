"""Receipt verification in instructions counted, not seconds: ratios that a noisy machine does not move.

    python benchmarks/verify_instructions.py [--receipts 1000] [--compare DIR]

On a shared machine the same code's receipts/s swings by a third from one run to the next, more than
most changes to the verifier move it. Valgrind's instruction count (``cachegrind --cache-sim=no``) does
not: two runs of one checkout agree within about 0.5 %. Each figure is the instructions of a child process
that verifies N receipts minus those of one that prepares the same N and verifies none, divided by N;
``--compare DIR`` counts another checkout of the repository (through the public API only) the same way.

Instructions are a proxy for time, and a lopsided one: the signature check (libsodium's arithmetic) runs
more instructions per cycle than the interpreter does, so the rest of a receipt costs about twice as
much of the time as of the instructions (see the last line). Compare Python with Python. Needs
``valgrind`` (Debian: ``apt-get install valgrind``); about 3 minutes with ``--compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receipt_verifier._progress import table

from _common import anchored_receipts, window_receipts

# Run in the checkout measured, under valgrind: prepare N receipts, verify the first COUNT of them.
_CHILD = """
import json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from receipt_verifier import AnchorPolicy, Verifier, parse_receipt
from receipt_verifier import verify as verify_module
from receipt_verifier.ledger import verify_entry_signature
mode, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = json.load(open(name))
key, texts, policy = load_pem_public_key(doc["pem"].encode()), doc["texts"], AnchorPolicy()
if mode == "signature":
    signed = []
    for s in texts:
        anchor = parse_receipt(s).branches[0].ops[-1].anchors[0]
        signed.append((anchor.entry, anchor.signature, anchor.entry.canonical_bytes()))
    for entry, signature, canonical in signed[:count]:
        verify_entry_signature(key, entry, signature, canonical)
    sys.exit(0)
if mode == "rest":
    verify_module.verify_entry_signature = lambda *args, **kw: None
verifier = Verifier([key])
verifier.verify_policy(doc["warm"], policy)  # every code path taken once before counting
for s in texts[:count]:
    verifier.verify_policy(s, policy)
"""

_MODES = [
    ("one", "one", "one window, warm"),
    ("spread", "full", "every receipt its own window"),
    ("spread", "rest", "  of it: everything but the signature"),
    ("spread", "signature", "  of it: the ledger signature alone"),
]
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _count(tree: Path, mode: str, name: str, count: int) -> int:
    """Instructions of one child run in ``tree``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree / "verifier" / "src"), str(tree)]),
        "PYTHONHASHSEED": "0",  # the same dict layouts in every run
    }
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    out = subprocess.run(
        [*cmd, sys.executable, "-c", _CHILD, mode, name, str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    found = _REFS.search(out.stderr)
    if found is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--receipts", type=int, default=1000)
    p.add_argument("--compare", type=Path, help="another checkout of the repository, counted the same way")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    n = args.receipts
    here = Path(__file__).resolve().parent.parent
    trees = [("this checkout", here)] + ([(str(args.compare), args.compare.resolve())] if args.compare else [])
    with tempfile.TemporaryDirectory() as tmp:
        names = {}
        print(f"  building {n:,} receipts of one window and {n:,} of distinct windows ...", file=sys.stderr)
        for label, (texts, ledger) in {"one": anchored_receipts(n + 1), "spread": window_receipts(n + 1)}.items():
            pem = ledger.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
            names[label] = os.path.join(tmp, f"{label}.json")
            Path(names[label]).write_text(json.dumps({"pem": pem, "warm": texts[-1], "texts": texts[:-1]}))
        per: dict[tuple[str, str], float] = {}
        steps, done = len(trees) * len(_MODES) * 2, 0
        for label, tree in trees:
            for data, mode, _ in _MODES:
                counts = []
                for count in (0, n):
                    done += 1
                    print(f"  [{done}/{steps}] {label}: {mode} on {data}, {count:,} receipts", file=sys.stderr)
                    counts.append(_count(tree, mode, names[data], count))
                per[label, mode] = (counts[1] - counts[0]) / n
    head = ["mode", "instructions/receipt"] + ([str(args.compare), "this / other"] if args.compare else [])
    rows = []
    for _, mode, title in _MODES:
        mine = per["this checkout", mode]
        row = [title, f"{mine:,.0f}"]
        if args.compare:
            other = per[str(args.compare), mode]
            row += [f"{other:,.0f}", f"{mine / other:.3f}"]
        rows.append(row)
    print(table(head, rows))
    rest, signature = per["this checkout", "rest"], per["this checkout", "signature"]
    print(f"everything but the signature / the signature, in instructions: {rest / signature:.2f}")


if __name__ == "__main__":
    main()
