"""``receipt-verify``: verify receipts offline.

Exit codes: 0 every receipt valid; 1 at least one receipt invalid; 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import strict_json
from ._progress import Progress, table
from .access_event import jwk_public_key, parse_event, thumbprint, verify_signature
from .audit import find_items, render_chain_html, render_history_html, render_html, run_audit
from .chainpoint import to_chainpoint_v4
from .codec import DEFAULT_LIMITS, Limits, parse_receipt
from .errors import Error, EventSignatureError, UsageError
from .fabric.trust import ChannelTrust, load_trust, make_trust
from .history import verify_history
from .ledger import check_ledger_chains, iter_ledger, key_id, load_public_key_file, verify_chain
from .proof_id import parse_proof_id, ticks_to_received
from .verify import AnchorPolicy, AnchorStatus, VerificationResult, Verifier

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

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


@dataclass
class Item:
    """One receipt to verify and where it came from."""

    source: str
    data: bytes


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
                            yield Item(f"{f}:{n}", line)
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
                last = b"\n"
                while chunk := handle.read(1 << 20):
                    total += chunk.count(b"\n")
                    last = chunk[-1:]
                total += last != b"\n"
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


def _verify_main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    policy = AnchorPolicy.parse(args.require_anchors)
    keys = [load_public_key_file(k) for k in args.ledger_key]
    limits = Limits(max_bytes=args.max_bytes)
    trust = _load_trust(args.trust) if args.trust is not None else None
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
    files = _files(args.inputs)
    total = _count(files)
    if total == 0:
        raise UsageError("no receipts found in the given inputs")
    jobs = args.jobs or os.cpu_count() or 1
    if total is not None and total < 2000:
        jobs = 1  # starting processes costs more than it saves
    setup = _Setup(
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
            for item in _iter_inputs(files):
                report = _verify_one(verifier, item, policy, record, args.hash)
                summary.add(report)
                if out is not None:
                    out.result(report)
                bar.advance()
        else:
            for lines in _parallel(setup, files, jobs):
                for valid, warned, text in lines:
                    summary.add_encoded(valid, warned, text)
                if out is not None:
                    out.results([text for _, _, text in lines])
                bar.advance(len(lines))
    if out is not None:
        out.close(summary.to_dict())
    else:
        _print_table(summary)
    return EXIT_VALID if summary.invalid == 0 else EXIT_INVALID


@dataclass(frozen=True)
class _Setup:
    """What a worker process needs to build the same verifier (picklable)."""

    keys: list[bytes]
    trust: bytes | None
    limits: Limits
    strict_schema: bool
    policy: AnchorPolicy
    record: bytes | None
    record_hash: str | None
    strict_evidence: bool = False


_WORKER: tuple[Verifier, _Setup] | None = None


def _init_worker(setup: _Setup) -> None:
    global _WORKER
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = [Ed25519PublicKey.from_public_bytes(k) for k in setup.keys]
    trust = load_trust(setup.trust) if setup.trust is not None else None
    verifier = Verifier(
        keys,
        limits=setup.limits,
        strict_schema=setup.strict_schema,
        fabric_trust=trust,
        strict_evidence=setup.strict_evidence,
    )
    _WORKER = (verifier, setup)


# A report as a worker sends it back: (valid, has warnings, the report as JSON text). The parent only
# counts and writes; it decodes the few reports it keeps for the summary.
_Encoded = tuple[bool, bool, str]


def _work(chunk: list[tuple[str, bytes]]) -> list[_Encoded]:
    assert _WORKER is not None
    verifier, setup = _WORKER
    out = []
    for source, data in chunk:
        report = _verify_one(verifier, Item(source, data), setup.policy, setup.record, setup.record_hash)
        out.append((bool(report["valid"]), "warnings" in report, json.dumps(report)))
    return out


def _work_lines(path: str, start: int, end: int, first_line: int) -> list[_Encoded]:
    """``_work`` on the lines of a JSON-lines file between two byte offsets, read by the worker itself."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")
    return _work([(f"{path}:{n}", line) for n, line in enumerate(lines, first_line) if line.strip()])


def _line_ranges(path: Path, size: int = 1 << 21) -> Iterator[tuple[int, int, int]]:
    """(start, end, first line number) of consecutive pieces of about ``size`` bytes, each ending after a
    newline (the last one at the end of the file): the file is read once, in blocks, counting newlines.
    A piece ends at its block's last newline, so what a block leaves over holds none."""
    start = pos = 0
    line = 1
    with open(path, "rb") as handle:
        while block := handle.read(size):
            base, pos = pos, pos + len(block)
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one long line: the piece goes on into the next block
                continue
            yield start, base + cut, line
            line += block.count(b"\n", 0, cut)
            start = base + cut
    if start < pos:
        yield start, pos, line


def _parallel(setup: _Setup, files: list[Path | None], jobs: int, chunk: int = 1000) -> Iterator[list[_Encoded]]:
    """Chunks of encoded reports in input order from ``jobs`` processes; at most 2 chunks per process in
    flight (bounded memory).

    Receipts of one tree sit next to each other in the service's output, so a chunk mostly shares its
    tree's anchors, ledger signatures and Fabric blocks, which each process checks once and caches. The
    workers read JSON-lines files themselves (the parent hands out byte ranges) and encode the reports:
    the parent, which would otherwise read, send and write everything for every process, stays light."""
    from concurrent.futures import Future, ProcessPoolExecutor

    pending: deque[Future[list[_Encoded]]] = deque()

    def submit(future: Future[list[_Encoded]]) -> Iterator[list[_Encoded]]:
        pending.append(future)
        while len(pending) >= 2 * jobs:
            yield pending.popleft().result()

    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(setup,)) as pool:
        for f in files:
            if f is not None and f.suffix == ".jsonl":
                try:
                    for start, end, first in _line_ranges(f):
                        yield from submit(pool.submit(_work_lines, str(f), start, end, first))
                except OSError as exc:
                    raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
                continue
            batch: list[tuple[str, bytes]] = []
            for item in _iter_inputs([f]):
                batch.append((item.source, item.data))
                if len(batch) == chunk:
                    yield from submit(pool.submit(_work, batch))
                    batch = []
            if batch:
                yield from submit(pool.submit(_work, batch))
        while pending:
            yield pending.popleft().result()


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
    try:
        result: VerificationResult = verifier.verify(item.data, record=record, record_hash=record_hash)
    except Error as exc:
        return {"source": item.source, "valid": False, "error": type(exc).__name__, "reason": exc.diagnostics()}
    report = result.to_dict(policy)
    report["source"] = item.source
    warnings = sorted({w for a in report["anchors"] for w in a.get("details", {}).get("warnings", [])})
    if warnings:  # valid, but the evidence says something the trust file does not
        report["warnings"] = warnings
    return report


def _print_table(summary: _Summary) -> None:
    every = summary.receipts <= summary.SHOWN
    shown = summary.first if every else summary.invalid_shown
    rows = []
    for r in shown:
        if "error" in r:
            rows.append([r["source"], "INVALID", "-", _why(r)])
            continue
        anchors = (
            ", ".join(
                f"{a['type']}:{'ok' if a['status'] == AnchorStatus.VERIFIED.value else a['status']}"
                for a in r["anchors"]
            )
            or "-"
        )
        rows.append([r["source"], "valid" if r["valid"] else "INVALID", anchors, _why(r) or r["state"]])
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


def _audit_main(argv: list[str]) -> int:
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
    trust = _load_trust(args.trust) if args.trust is not None else None
    verifier = Verifier([load_public_key_file(k) for k in args.ledger_key], fabric_trust=trust)
    total = len(find_items(args.folder))
    with Progress(total, "auditing", enabled=args.progress or None) as bar:
        report = run_audit(args.folder, verifier, policy, bar.advance)
    s = report["summary"]
    rows = [
        [r["record"], "valid" if r["valid"] else "INVALID", _anchor_summary(r), _why(r)]
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


def _why(report: dict[str, Any]) -> str:
    """The receipt's reason, then each anchor that did not verify and why."""
    parts = [str(report["reason"])] if report.get("reason") else []
    if "error" in report:
        parts = [f"{report['error']}: {report.get('reason', '')}"]
    for a in report.get("anchors", []):
        if a["status"] != AnchorStatus.VERIFIED.value:
            where = a.get("details", {}).get("channel", a["type"])
            parts.append(f"{where}: {a['reason']}")
    return "; ".join(parts)


def _anchor_summary(report: dict[str, Any]) -> str:
    parts = []
    for a in report.get("anchors", []):
        where = a.get("details", {}).get("channel", a["type"])
        parts.append(f"{where}:{'ok' if a['status'] == AnchorStatus.VERIFIED.value else a['status']}")
    return ", ".join(parts) or "-"


def _load_trust(path: Path) -> dict[str, ChannelTrust]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the trust file ({exc.strerror})") from None
    return load_trust(data)


def _trust_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="receipt-verify trust",
        description="Make the Fabric trust file from each channel's genesis or config block (fetched out of band).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a trust file from config blocks")
    init.add_argument("--config-block", type=Path, action="append", required=True, metavar="FILE")
    init.add_argument("-o", "--output", type=Path, required=True)
    show = sub.add_parser("show", help="check a trust file and print what it pins")
    show.add_argument("trust", type=Path)
    args = p.parse_args(argv)
    if args.command == "show":
        channels = _load_trust(args.trust)
    else:
        blocks = []
        for f in args.config_block:
            try:
                blocks.append(f.read_bytes())
            except OSError as exc:
                raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
        doc = make_trust(blocks)
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
        channels = load_trust(doc)
    rows = [
        [
            name,
            str(t.config_block_number),
            t.config_block_hash,
            ", ".join(t.application_orgs),
            t.summary()["endorsement_policy"],
        ]
        for name, t in sorted(channels.items())
    ]
    print(table(["channel", "config block", "header hash (compare out of band)", "orgs", "endorsement"], rows))
    return EXIT_VALID


def _ledger_main(argv: list[str]) -> int:
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


def _chainpoint_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="receipt-verify chainpoint", description="Print a receipt's Chainpoint v4 export.")
    p.add_argument("receipt", type=Path)
    args = p.parse_args(argv)
    try:
        data = args.receipt.read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.receipt}: cannot read ({exc.strerror})") from None
    json.dump(to_chainpoint_v4(parse_receipt(data)), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_VALID


def _event_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="receipt-verify event",
        description="Check an access event's signature against pinned JWKs and, with its receipt, that it is anchored.",
    )
    p.add_argument("event", type=Path, help="the event JSON, or an item of GET /subjects/{subject}/access-events")
    p.add_argument("--key", type=Path, action="append", required=True, metavar="JWK", help="a pinned public key")
    p.add_argument("--receipt", type=Path, help="the event's receipt (default: the one in the item, if any)")
    p.add_argument("--ledger-key", type=Path, action="append", default=[], metavar="KEY")
    p.add_argument("--trust", type=Path, help="Fabric trust file")
    p.add_argument("--require-anchors", default="all", metavar="all|any|N")
    args = p.parse_args(argv)
    doc = _read_json(args.event)
    receipt: Any = doc.get("receipt") if isinstance(doc, dict) and "event" in doc else None
    event = parse_event(doc["event"] if isinstance(doc, dict) and "event" in doc else doc)
    keys = {}
    for path in args.key:
        jwk = _read_json(path)
        key = jwk_public_key(jwk.get("jwk", jwk) if isinstance(jwk, dict) else jwk)
        keys[thumbprint(key)] = key
    if event.key_id not in keys:
        raise EventSignatureError(f"the event is signed with key {event.key_id}, which no --key pins")
    verify_signature(event, keys[event.key_id])
    row = [event.action, event.owner, event.receiver, event.domain, event.doc["time"], "ok"]
    if args.receipt is not None:
        receipt = _read_json(args.receipt)
    if receipt is None:
        print(table(["action", "owner", "receiver", "domain", "time", "signature"], [row]))
        print("no receipt given: the event is authentic, its anchoring is not checked", file=sys.stderr)
        return EXIT_VALID
    verifier = Verifier(
        [load_public_key_file(k) for k in args.ledger_key],
        fabric_trust=_load_trust(args.trust) if args.trust else None,
    )
    result = verifier.verify_policy(receipt, AnchorPolicy.parse(args.require_anchors), record_hash=event.event_hash())
    print(
        table(
            ["action", "owner", "receiver", "domain", "time", "signature", "anchors"],
            [[*row, _anchor_summary(result.to_dict())]],
        )
    )
    return EXIT_VALID


_DURATION = re.compile(r"^(\d+)([smhd])$")


def _duration(text: str) -> timedelta:
    m = _DURATION.fullmatch(text)
    if m is None:
        raise UsageError(f"--max-age {text!r}: write a number and a unit, e.g. 90s, 15m, 12h, 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m[2]]
    return timedelta(**{unit: int(m[1])})


def _history_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="receipt-verify history",
        description="Check a history bundle: is it a subject's complete log in a domain, and as of which window?",
    )
    p.add_argument("bundle", type=Path, help="from GET /subjects/{subject}/history")
    p.add_argument("--ledger-key", type=Path, action="append", default=[], metavar="KEY")
    p.add_argument("--trust", type=Path, help="Fabric trust file: the window's Fabric anchor verifies it")
    p.add_argument("--ledger", type=Path, help="the ledger file (public): a newer window of the domain makes it stale")
    p.add_argument("--previous", type=Path, help="an older bundle of the same log: the log must only have grown")
    p.add_argument("--records", type=Path, metavar="DIR", help="hash every file here and match them to the log")
    p.add_argument("--max-age", type=_duration, metavar="DURATION", help="refuse a window older than this (30d, 12h)")
    p.add_argument("--as-of", help="judge freshness as of this RFC 3339 time (default: now)")
    p.add_argument(
        "--lane",
        help="the chain the domain's windows are in on its channel (default: the domain; PREFIX.DOMAIN for a"
        " deployment with a chain_prefix): only a window of that chain is append-only",
    )
    p.add_argument(
        "--require-committed",
        action="store_true",
        help="a problem unless a successor in the bundle proves the chained Fabric window committed (a bundle"
        " fetched after the lane's next window carries one; without it the commit rests on the serving peer)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the report as an HTML page")
    args = p.parse_args(argv)
    if not args.ledger_key and args.trust is None:
        raise UsageError("pin something: --ledger-key KEY (the local ledger) and/or --trust trust.json (Fabric)")
    if args.require_committed and args.trust is None:
        raise UsageError("--require-committed needs --trust: the successor is checked under the pinned channel")
    keys = {key_id(k): k for k in (load_public_key_file(f) for f in args.ledger_key)}
    entries = []
    if args.ledger is not None:
        if not keys:
            raise UsageError("--ledger needs --ledger-key: its chain is checked against the pinned key")
        try:
            lines = args.ledger.read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"{args.ledger}: cannot read ({exc.strerror})") from None
        signed = list(iter_ledger(lines))
        verify_chain(signed, next(iter(keys.values())))
        entries = [s.entry for s in signed]
    as_of = None
    if args.as_of is not None:
        try:
            as_of = datetime.fromisoformat(args.as_of).astimezone(UTC)
        except ValueError:
            raise UsageError(f"--as-of {args.as_of!r} is not an RFC 3339 time") from None
    report, records = verify_history(
        _read_json(args.bundle),
        keys,
        fabric_trust=_load_trust(args.trust) if args.trust else None,
        ledger=entries,
        previous=_read_json(args.previous) if args.previous else None,
        max_age=args.max_age,
        as_of=as_of,
        lane=args.lane,
        require_committed=args.require_committed,
    )
    doc = report.to_dict()
    doc["checked_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["items"] = [
        {
            "seq": r.seq,
            "hash": r.hash.hex(),
            "proof_id": str(uuid.UUID(bytes=r.proof_id)),
            "received": ticks_to_received(parse_proof_id(str(uuid.UUID(bytes=r.proof_id))).ticks),
        }
        for r in records
    ]
    if args.records is not None:
        _match_files(args.records, doc)
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.html is not None:
        args.html.write_text(render_history_html(doc))
    state = "complete" if not doc["problems"] else "NOT complete"
    print(
        table(
            ["subject", "domain", "records", "state", "as of window", "window ended"],
            [
                [
                    doc["subject"],
                    doc["domain"],
                    str(doc["records"]),
                    state,
                    str(doc["window_id"]),
                    str(doc["window_end"]),
                ]
            ],
        )
    )
    print(f"  append-only: {doc['append_only']}")
    if doc["committed"] is not None:
        print(f"  commit: {doc['committed']}")
    for problem in doc["problems"]:
        print(f"  problem: {problem}")
    return EXIT_VALID if not doc["problems"] else EXIT_INVALID


def _match_files(folder: Path, doc: dict[str, Any]) -> None:
    """Hash every file under ``folder``; each log record must have one, and each file a record."""
    if not folder.is_dir():
        raise UsageError(f"--records {folder}: not a directory")
    by_hash: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".receipt.json")):
        by_hash.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), str(path.relative_to(folder)))
    listed = set()
    for item in doc["items"]:
        if item["hash"] in by_hash:
            item["file"] = by_hash[item["hash"]]
            listed.add(item["hash"])
        else:
            doc["problems"].append(f"record at sequence {item['seq']} has no file in {folder}")
    for h, name in by_hash.items():
        if h not in listed:
            doc["problems"].append(f"file {name} is not in the log (a record the history does not hold)")
    doc["files"] = {"records": len(doc["items"]), "matched": len(listed), "files": len(by_hash)}
    doc["complete"] = not doc["problems"]


def _block_files(paths: list[Path]) -> list[Path]:
    """Block files (``peer channel fetch`` output), directories expanded to the files they hold."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    if not out:
        raise UsageError("no block files found in the given inputs")
    return out


def _read_blocks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        try:
            yield path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def _chain_main(argv: list[str]) -> int:
    from .chain import replay
    from .fabric.windows import block_info, read_windows

    p = argparse.ArgumentParser(
        prog="receipt-verify chain",
        description="Replay a channel's chained windows (spec 14.7-14.9) from its blocks, offline: every block's"
        " orderer signatures, every AppendWindow's endorsements, sequence, previous hash, time, transition proof"
        " and the successor rule.",
    )
    p.add_argument("blocks", nargs="+", type=Path, metavar="BLOCKS", help="block files (peer channel fetch) or dirs")
    p.add_argument("--trust", type=Path, required=True, metavar="FILE", help="pinned Fabric trust file")
    p.add_argument("--lane", metavar="L", help="only this lane (a domain, or _ for the lane without one)")
    p.add_argument("--chaincode", default="anchor", metavar="NAME", help="the anchor chaincode's name (anchor)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the self-contained HTML report here")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    args = p.parse_args(argv)
    channels = _load_trust(args.trust)
    files = _block_files(args.blocks)
    numbered: dict[int, Path] = {}
    names: set[str] = set()
    with Progress(len(files), "reading blocks", enabled=(args.progress or None) if len(files) > 50 else False) as bar:
        for path, data in _read_blocks_paths(files):
            try:
                info = block_info(data)
            except Error as exc:
                raise UsageError(f"{path}: not a Fabric block ({exc})") from None
            if info.number in numbered:
                raise UsageError(f"{path} and {numbered[info.number]} are both block {info.number}")
            numbered[info.number] = path
            names.add(info.channel)
            bar.advance()
    if len(names) != 1:
        raise UsageError(f"the blocks belong to channels {', '.join(sorted(names))}: give one channel per run")
    channel = names.pop()
    trust = channels.get(channel)
    if trust is None:
        raise UsageError(f"channel {channel} is not in the trust file {args.trust}")
    ordered = [numbered[n] for n in sorted(numbered)]
    with Progress(len(ordered), "checking blocks", enabled=args.progress or None) as bar:
        found = read_windows(
            _read_blocks(ordered), trust, chaincode=args.chaincode, lane=args.lane, advance=bar.advance
        )
    chain = replay(found.windows)
    doc: dict[str, Any] = {
        "channel": channel,
        "checked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "trust": {"config_block": trust.config_block_number, "config_block_hash": trust.config_block_hash},
        "lane_filter": args.lane,
        **found.to_dict(),
        **chain.to_dict(),
    }
    missing = args.lane is not None and args.lane not in chain.lanes
    doc["ok"] = chain.ok and not found.problems and not missing
    if missing:
        doc["block_problems"].append(f"lane {args.lane} has no window in these blocks")
    rows = []
    for lane in chain.lanes.values():
        tip = lane.tip
        rows.append(
            [
                lane.lane,
                f"{lane.checked}/{len(lane.windows)}",
                str(lane.first_seq),
                "-" if tip is None else str(tip.seq),
                "-" if tip is None else tip.window_end,
                lane.verdict,
            ]
        )
    print(
        f"channel {channel}: blocks {found.first_block}..{found.last_block} ({found.blocks}), trust config block"
        f" {trust.config_block_number}"
    )
    if rows:
        print(table(["lane", "windows", "first seq", "tip seq", "tip window end", "verdict"], rows))
    else:
        print("no chained window in these blocks")
    for t in found.left_out:
        print(f"  left out: block {t.block} tx {t.tx} ({t.code}) lane {t.lane} seq {t.seq}: {t.note}; {t.endorsed}")
    for problem in doc["block_problems"]:
        print(f"  problem: {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.html is not None:
        args.html.write_text(render_chain_html(doc))
    return EXIT_VALID if doc["ok"] else EXIT_INVALID


def _read_blocks_paths(paths: list[Path]) -> Iterator[tuple[Path, bytes]]:
    yield from zip(paths, _read_blocks(paths), strict=True)


def _read_json(path: Path) -> Any:
    try:
        return strict_json.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None


def run() -> None:
    """Console entry point: like Unix tools, die quietly when the reader of the output goes away."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "ledger": _ledger_main,
        "chainpoint": _chainpoint_main,
        "trust": _trust_main,
        "audit": _audit_main,
        "event": _event_main,
        "history": _history_main,
        "chain": _chain_main,
    }
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return _verify_main(argv)
    except UsageError as exc:
        print(f"receipt-verify: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_USAGE
    except Error as exc:
        print(f"receipt-verify: invalid: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_INVALID
    except SystemExit as exc:  # argparse: --help is 0, bad usage is 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
