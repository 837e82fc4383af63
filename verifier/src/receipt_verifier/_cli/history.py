"""``receipt-verify history``: is a history bundle a subject's complete log, and as of which window."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .._progress import table
from ..audit import render_history_html
from ..errors import UsageError
from ..history import verify_history
from ..ledger import iter_ledger, key_id, load_public_key_file, verify_chain_of
from ..proof_id import parse_proof_id, ticks_to_received
from .common import EXIT_INVALID, EXIT_VALID, load_trust_file, read_json

_DURATION = re.compile(r"^(\d+)([smhd])$")


def _duration(text: str) -> timedelta:
    m = _DURATION.fullmatch(text)
    if m is None:
        raise UsageError(f"--max-age {text!r}: write a number and a unit, e.g. 90s, 15m, 12h, 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m[2]]
    return timedelta(**{unit: int(m[1])})


def main(argv: list[str]) -> int:
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
        verify_chain_of(signed, keys.values())  # under whichever pinned key signed it
        entries = [s.entry for s in signed]
    as_of = None
    if args.as_of is not None:
        try:
            as_of = datetime.fromisoformat(args.as_of).astimezone(UTC)
        except ValueError:
            raise UsageError(f"--as-of {args.as_of!r} is not an RFC 3339 time") from None
    report, records = verify_history(
        read_json(args.bundle),
        keys,
        fabric_trust=load_trust_file(args.trust) if args.trust else None,
        ledger=entries,
        previous=read_json(args.previous) if args.previous else None,
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
