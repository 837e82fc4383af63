"""``receipt-verify ledger``: check a whole local ledger's chain and replay its domains' windows."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .._progress import Progress, table
from ..errors import UsageError
from ..ledger import (
    GENESIS_PREV,
    SignedEntry,
    check_ledger_chains,
    iter_chain,
    iter_ledger,
    key_id,
    load_public_key_file,
)
from .common import EXIT_VALID, count_lines


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
    proofs = _proofs(args.proofs) if args.proofs is not None else None
    count, head, chained = 0, GENESIS_PREV, set()

    def checked(handle: BinaryIO, bar: Progress) -> Iterator[SignedEntry]:
        """The ledger's entries, read line by line, each once its place, link and signature are checked."""
        nonlocal count, head
        for signed, digest in iter_chain(iter_ledger(handle), key):
            count, head = count + 1, digest.hex()
            if signed.entry.chain_seq is not None and signed.entry.domain:
                chained.add(signed.entry.domain)
            bar.advance()
            yield signed

    try:
        with open(args.ledger, "rb") as handle:  # one pass: the file is never held whole (a signature a line)
            lines = count_lines(handle)
            with Progress(lines, f"checking {args.ledger.name}", enabled=None if lines > 1 else False) as bar:
                if proofs is None:
                    for _ in checked(handle, bar):
                        pass
                    tips = None
                else:
                    tips = check_ledger_chains(checked(handle, bar), proofs)
    except OSError as exc:
        raise UsageError(f"{args.ledger}: cannot read ({exc.strerror})") from None
    print(table(["ledger", "key_id", "entries", "head"], [[str(args.ledger), key_id(key), str(count), head]]))
    if tips is None:
        if chained:
            print(f"chained windows of {', '.join(sorted(chained))} not replayed: pass --proofs ledger-proofs.jsonl")
        return EXIT_VALID
    rows = [[d, str(t.chain_seq + 1), t.window_id, t.window_end, "append-only"] for d, t in sorted(tips.items())]
    print(table(["domain", "windows", "tip window", "tip ended", "verdict"], rows))
    return EXIT_VALID


def _proofs(path: Path) -> dict[str, str]:
    """The transition proofs of a ``ledger-proofs.jsonl``, by the SHA-256 of their text."""
    try:
        proof_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    proofs = {}
    for n, line in enumerate(proof_lines, 1):
        try:
            text = str(json.loads(line)["proof"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise UsageError(f"{path} line {n} is not a window's transition proof") from None
        proofs[hashlib.sha256(text.encode("utf-8")).hexdigest()] = text
    return proofs
