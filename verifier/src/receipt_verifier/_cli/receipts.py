"""``receipt-verify RECEIPT...``: receipts in bulk, from files, folders or standard input, in N processes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import strict_json
from .._progress import Progress, table
from ..codec import DEFAULT_LIMITS, Limits
from ..errors import LedgerError, LedgerForkError, UsageError
from ..ledger import SeenEntries, iter_ledger, load_public_key_file
from ..verify import (
    AnchorPolicy,
    AnchorStatus,
    Verifier,
)
from .common import EXIT_INVALID, EXIT_VALID, count_lines, load_trust_file, why
from .workers import Forks, Item, Setup, check, parallel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EPILOG = """\
inputs: receipt files (.json), JSON-lines files (.jsonl, one receipt a line),
directories (every .json/.jsonl inside, recursively), or - for standard input.

exit codes:
  0  every receipt is valid under --require-anchors
  1  at least one receipt is invalid (malformed, tampered, or too few anchors verified)
  2  bad usage or unreadable input

other commands:
  receipt-verify ledger LEDGER.jsonl --ledger-key KEY   check a whole local ledger's chain
  receipt-verify chainpoint RECEIPT.json                print the Chainpoint v4 export
  receipt-verify trust init --config-block F... -o T    pin Fabric channels (config blocks)
  receipt-verify trust show T                           check a trust file, print what it pins
  receipt-verify audit DIR --trust T [--ledger-key K] [--json R.json] [--html R.html]
                                                        an insurer's audit of records and their receipts
  receipt-verify event EVENT.json --key JWK [--receipt R.json --ledger-key K | --trust T]
                                                        an access event's signature (pinned JWKs) and anchoring
  receipt-verify history BUNDLE.json --ledger-key K | --trust T [--ledger L] [--records DIR] [--max-age 30d]
                        [--require-committed]
                                                        is a subject's history complete, and as of which window
  receipt-verify chain --trust T BLOCKS... [--lane L] [--json R.json] [--html R.html]
                                                        replay a channel's chained windows from its blocks
"""


PARALLEL_FROM = 2000  # receipts: fewer are verified in one process whatever --jobs says


def _files(paths: list[str]) -> list[Path | None]:
    """Every input file (``None`` for standard input), in order."""
    out: list[Path | None] = []
    for raw in paths:
        if raw == "-":
            out.append(None)
            continue
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        elif path.exists():
            out.append(path)
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return out


def _iter_inputs(files: list[Path | None]) -> Iterator[Item]:
    """Receipts one at a time: JSON-lines files are read line by line, so memory stays bounded."""
    for f in files:
        if f is None:
            yield from _split("<stdin>", sys.stdin.buffer.read())
            continue
        try:
            if f.suffix == ".jsonl":
                with open(f, "rb") as handle:
                    for n, line in enumerate(handle, 1):
                        if line.strip():
                            yield Item(f"{f}:{n}", line.rstrip(b"\r\n"))  # the receipt, not its line end
            elif f.suffix == ".json":  # one receipt or bundle, or a saved /proofs?ids= answer
                yield from _split(str(f), f.read_bytes())
            else:
                yield Item(str(f), f.read_bytes())
        except OSError as exc:
            raise UsageError(f"{f}: cannot read ({exc.strerror})") from None


def _count(files: list[Path | None]) -> int | None:
    """How many receipts the files hold (lines of JSON-lines files), without keeping them; None for stdin."""
    total = 0
    for f in files:
        if f is None:
            return None
        if f.suffix != ".jsonl":
            try:
                with open(f, "rb") as handle:
                    if _BATCH_DOC.match(handle.read(256)):
                        return None  # a /proofs?ids= answer holds many receipts: no total known up front
            except OSError as exc:
                raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
            total += 1
            continue
        try:
            with open(f, "rb") as handle:
                total += count_lines(handle)
        except OSError as exc:
            raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
    return total


_BATCH_DOC = re.compile(rb'\s*\{\s*"receipts"\s*:')


def _split(source: str, data: bytes) -> Iterator[Item]:
    if _BATCH_DOC.match(data):  # a saved GET /proofs?ids= answer: its receipts, one by one
        try:
            doc = strict_json.loads(data)
        except ValueError as exc:
            raise UsageError(f"{source}: not JSON ({exc})") from None
        receipts = doc.get("receipts") if isinstance(doc, dict) else None
        if not isinstance(receipts, list):
            raise UsageError(f"{source}: 'receipts' must be a list (a GET /proofs?ids= answer)")
        for i, r in enumerate(receipts):
            yield Item(f"{source}#receipts[{i}]", json.dumps(r).encode())
        return
    stripped = data.lstrip()
    if stripped.startswith(b"{") and b"\n{" not in stripped.rstrip():
        yield Item(source, data)
        return
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield Item(f"{source}:{n}", line)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="receipt-verify",
        description="Verify health-record proof receipts offline (no network access, ever).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="RECEIPT", help="receipt file, .jsonl file, directory, or -")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--record", type=Path, metavar="FILE", help="check the receipt covers this record's SHA-256")
    g.add_argument("--hash", metavar="HEX", help="check the receipt covers this SHA-256 hash")
    p.add_argument(
        "--ledger-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="pinned public key of a local ledger (PEM, hex, or /ledger/key JSON); repeatable",
    )
    p.add_argument(
        "--ledger",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a copy of a local ledger (its chain checked under a pinned key): a receipt whose entry differs"
        " from the copy's at its seq is a fork; repeatable",
    )
    p.add_argument(
        "--trust",
        type=Path,
        metavar="FILE",
        help="pinned Fabric trust file (receipt-verify trust init); Fabric anchors need it and evidence",
    )
    p.add_argument(
        "--require-anchors",
        default="all",
        metavar="all|any|N",
        help="how many anchors must verify for a receipt to be valid: all (default), any, or N; 0 checks a pending receipt's form only",
    )
    p.add_argument("--strict-schema", action="store_true", help="also validate with the full JSON Schema engine (slow)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail a Fabric anchor whose evidence contradicts the trust file (a config block of the pinned number"
        " that is not the pinned one); without it, a warning",
    )
    p.add_argument("--max-bytes", type=int, default=DEFAULT_LIMITS.max_bytes, help="largest receipt accepted")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of a table (written as it goes)")
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="verify in N processes (default: every core; 1: in this process)",
    )
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    return p


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    policy = AnchorPolicy.parse(args.require_anchors)
    keys = [load_public_key_file(k) for k in args.ledger_key]
    limits = Limits(max_bytes=args.max_bytes)
    trust = load_trust_file(args.trust) if args.trust is not None else None
    record = None
    if args.record is not None:
        try:
            record = args.record.read_bytes()
        except OSError as exc:
            raise UsageError(f"{args.record}: cannot read record ({exc.strerror})") from None
    if args.hash is not None and (len(args.hash) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.hash)):
        raise UsageError(f"--hash must be a SHA-256 hash in 64 hex characters, got {args.hash!r}")
    if args.jobs < 0:
        raise UsageError("--jobs must be 0 (every core) or a positive number of processes")
    if args.ledger and not keys:
        raise UsageError("--ledger needs --ledger-key: the copy's chain is checked under a pinned key")
    files = _files(args.inputs)
    total = _count(files)
    if total == 0:
        raise UsageError("no receipts found in the given inputs")
    seen = SeenEntries()  # fork detection; a ledger copy's entries are the ones seen first
    for path in args.ledger:
        _pin(seen, path, keys, args.progress)
    jobs = args.jobs or os.cpu_count() or 1
    if total is not None and total < PARALLEL_FROM:
        jobs = 1  # starting processes costs more than it saves
    setup = Setup(
        [k.public_bytes_raw() for k in keys],
        args.trust.read_bytes() if args.trust is not None else None,
        limits,
        args.strict_schema,
        policy,
        record,
        args.hash,
        args.strict,
    )
    summary = _Summary(policy)
    out = _JsonWriter(sys.stdout) if args.json else None
    show = total is not None and total > 1
    with Progress(total or 0, "verifying", enabled=(args.progress or None) if show else False) as bar:
        if jobs == 1:
            verifier = Verifier(
                keys, limits=limits, strict_schema=args.strict_schema, fabric_trust=trust, strict_evidence=args.strict
            )
            verifier._seen = seen
            for item in _iter_inputs(files):
                report = _verify_one(verifier, item, policy, record, args.hash)
                summary.add(report)
                if out is not None:
                    out.result(report)
                bar.advance()
        else:
            forks = Forks(seen, policy)
            for lines in parallel(setup, files, jobs, _iter_inputs):  # their entries and blocks checked here, in order
                texts = []
                for valid, warned, text, entries, blocks in lines:
                    if entries or blocks:
                        valid, warned, text = forks.check(valid, warned, text, entries, blocks)
                    summary.add_encoded(valid, warned, text)
                    texts.append(text)
                if out is not None:
                    out.results(texts)
                bar.advance(len(lines))
    if out is not None:
        out.close(summary.to_dict())
    else:
        _print_table(summary)
    return EXIT_VALID if summary.invalid == 0 else EXIT_INVALID


def _pin(seen: SeenEntries, path: Path, keys: list[Ed25519PublicKey], progress: bool) -> None:
    """Take the ledger copy at ``path`` as entries seen first (``SeenEntries.pin``, read line by line, every
    signature checked: a progress bar), or say why not; two copies that disagree are a fork (exit 1)."""
    try:
        with open(path, "rb") as handle:
            lines = count_lines(handle)
            with Progress(lines, f"checking {path.name}", enabled=(progress or None) if lines > 1 else False) as bar:
                seen.pin(iter_ledger(handle), keys, bar.advance)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except LedgerForkError as exc:
        raise LedgerForkError(f"{path}: {exc}") from None
    except LedgerError as exc:
        raise UsageError(f"{path}: {exc}") from None


class _Summary:
    """Counts and the first invalid reports (bounded), whatever the input size."""

    SHOWN = 50

    def __init__(self, policy: AnchorPolicy) -> None:
        self.policy = policy
        self.receipts = 0
        self.invalid = 0
        self.first: list[dict[str, Any]] = []  # the first SHOWN reports
        self.invalid_shown: list[dict[str, Any]] = []  # the first SHOWN invalid reports
        self.warned = 0
        self.warnings: list[str] = []  # the first SHOWN warnings, with their receipts

    def add_encoded(self, valid: bool, warned: bool, text: str) -> None:
        """``add`` for a report sent as JSON text: decoded only when it is kept or its warnings are."""
        if valid and not warned and len(self.first) >= self.SHOWN:
            self.receipts += 1
            return
        self.add(json.loads(text))

    def add(self, report: dict[str, Any]) -> None:
        self.receipts += 1
        if report.get("warnings"):
            self.warned += 1
            if len(self.warnings) < self.SHOWN:
                self.warnings += [f"{report['source']}: {w}" for w in report["warnings"]]
        if len(self.first) < self.SHOWN:
            self.first.append(report)
        if not report["valid"]:
            self.invalid += 1
            if len(self.invalid_shown) < self.SHOWN:
                self.invalid_shown.append(report)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "receipts": self.receipts,
            "valid": self.receipts - self.invalid,
            "invalid": self.invalid,
            "policy": self.policy.describe(),
        }
        if self.warned:  # receipts valid, whose evidence says something the trust file does not
            out["warned"] = self.warned
        return out


class _JsonWriter:
    """``{"results": [...], "summary": {...}}`` written as results arrive."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.n = 0
        stream.write('{"results": [')

    def result(self, report: dict[str, Any]) -> None:
        self.results([json.dumps(report)])

    def results(self, texts: list[str]) -> None:
        """Reports already encoded, in one write."""
        if texts:
            self.stream.write((",\n  " if self.n else "\n  ") + ",\n  ".join(texts))
            self.n += len(texts)

    def close(self, summary: dict[str, Any]) -> None:
        self.stream.write(f'\n], "summary": {json.dumps(summary)}}}\n')
        self.stream.flush()


def _verify_one(
    verifier: Verifier, item: Item, policy: AnchorPolicy, record: bytes | None, record_hash: str | None
) -> dict[str, Any]:
    return check(verifier, item, policy, record, record_hash)[0]


def _print_table(summary: _Summary) -> None:
    every = summary.receipts <= summary.SHOWN
    shown = summary.first if every else summary.invalid_shown
    rows = []
    for r in shown:
        if "error" in r:
            rows.append([r["source"], "INVALID", "-", why(r)])
            continue
        anchors = (
            ", ".join(
                f"{a['type']}:{'ok' if a['status'] == AnchorStatus.VERIFIED.value else a['status']}"
                for a in r["anchors"]
            )
            or "-"
        )
        rows.append([r["source"], "valid" if r["valid"] else "INVALID", anchors, why(r) or r["state"]])
    if rows:
        print(table(["receipt", "result", "anchors", "detail"], rows))
        if not every:
            hidden_invalid = summary.invalid - len(shown)
            print(
                f"({summary.receipts - summary.invalid} valid receipts not listed"
                + (f"; {hidden_invalid} more invalid ones: use --json for all" if hidden_invalid else "")
                + ")"
            )
        print()
    elif not every:
        print(f"(all {summary.receipts} receipts valid; use --json for each one)")
        print()
    for line in summary.warnings:
        print(f"warning: {line}")
    if summary.warned:
        print(f"({summary.warned} receipt(s) with warnings; --strict makes them fail)")
        print()
    s = summary.to_dict()
    print(
        table(
            ["receipts", "valid", "invalid", "policy"],
            [[str(s["receipts"]), str(s["valid"]), str(s["invalid"]), s["policy"]]],
        )
    )
