"""``receipt-verify``: verify receipts offline.

Exit codes: 0 every receipt valid; 1 at least one receipt invalid; 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._progress import Progress, table
from .audit import find_items, render_html, run_audit
from .chainpoint import to_chainpoint_v4
from .codec import DEFAULT_LIMITS, Limits, parse_receipt
from .errors import Error, UsageError
from .fabric.trust import ChannelTrust, load_trust, make_trust
from .ledger import iter_ledger, key_id, load_public_key_file, verify_chain
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
"""


@dataclass
class Item:
    """One receipt to verify and where it came from."""

    source: str
    data: bytes


def _iter_inputs(paths: list[str], limits: Limits) -> Iterator[Item]:
    for raw in paths:
        if raw == "-":
            yield from _split("<stdin>", sys.stdin.buffer.read())
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
        elif path.exists():
            files = [path]
        else:
            raise UsageError(f"{raw}: no such file or directory")
        for f in files:
            try:
                data = f.read_bytes()
            except OSError as exc:
                raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
            if f.suffix == ".jsonl":
                yield from _split(str(f), data)
            else:
                yield Item(str(f), data)


def _split(source: str, data: bytes) -> Iterator[Item]:
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
    p.add_argument("--max-bytes", type=int, default=DEFAULT_LIMITS.max_bytes, help="largest receipt accepted")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    return p


def _verify_main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    policy = AnchorPolicy.parse(args.require_anchors)
    keys = [load_public_key_file(k) for k in args.ledger_key]
    limits = Limits(max_bytes=args.max_bytes)
    trust = _load_trust(args.trust) if args.trust is not None else None
    verifier = Verifier(keys, limits=limits, strict_schema=args.strict_schema, fabric_trust=trust)
    record = None
    if args.record is not None:
        try:
            record = args.record.read_bytes()
        except OSError as exc:
            raise UsageError(f"{args.record}: cannot read record ({exc.strerror})") from None
    if args.hash is not None and (len(args.hash) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.hash)):
        raise UsageError(f"--hash must be a SHA-256 hash in 64 hex characters, got {args.hash!r}")
    items = list(_iter_inputs(args.inputs, limits))
    if not items:
        raise UsageError("no receipts found in the given inputs")
    reports: list[dict[str, Any]] = []
    with Progress(len(items), "verifying", enabled=(args.progress or None) if len(items) > 1 else False) as bar:
        for item in items:
            reports.append(_verify_one(verifier, item, policy, record, args.hash))
            bar.advance()
    valid = sum(r["valid"] for r in reports)
    summary = {"receipts": len(reports), "valid": valid, "invalid": len(reports) - valid, "policy": policy.describe()}
    if args.json:
        json.dump({"summary": summary, "results": reports}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(reports, summary)
    return EXIT_VALID if valid == len(reports) else EXIT_INVALID


def _verify_one(
    verifier: Verifier, item: Item, policy: AnchorPolicy, record: bytes | None, record_hash: str | None
) -> dict[str, Any]:
    try:
        result: VerificationResult = verifier.verify(item.data, record=record, record_hash=record_hash)
    except Error as exc:
        return {"source": item.source, "valid": False, "error": type(exc).__name__, "reason": exc.diagnostics()}
    report = result.to_dict(policy)
    report["source"] = item.source
    return report


def _print_table(reports: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    shown = reports if len(reports) <= 50 else [r for r in reports if not r["valid"]][:50]
    rows = []
    for r in shown:
        if "error" in r:
            rows.append([r["source"], "INVALID", "-", f"{r['error']}: {r['reason']}"])
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
        if len(shown) < len(reports):
            print(f"({len(reports) - len(shown)} more valid receipts not listed)")
        print()
    print(
        table(
            ["receipts", "valid", "invalid", "policy"],
            [[str(summary["receipts"]), str(summary["valid"]), str(summary["invalid"]), summary["policy"]]],
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
    args = p.parse_args(argv)
    key = load_public_key_file(args.ledger_key)
    try:
        lines = args.ledger.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"{args.ledger}: cannot read ({exc.strerror})") from None
    entries = list(iter_ledger(lines))
    head = verify_chain(entries, key)
    print(table(["ledger", "key_id", "entries", "head"], [[str(args.ledger), key_id(key), str(len(entries)), head]]))
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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"ledger": _ledger_main, "chainpoint": _chainpoint_main, "trust": _trust_main, "audit": _audit_main}
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
