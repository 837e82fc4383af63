"""``receipt-client``: stamp files (their hashes: the files never leave the machine), upgrade receipts,
fetch a subject's history bundle, verify offline.

Exit codes: 0 done (for verify: every receipt valid); 1 a receipt invalid or not anchored yet (for
history with ``--wait-committed``: the window's commit not proven in time); 2 bad usage, unreadable file,
a refused request or the service unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier._progress import table
from receipt_verifier.errors import Error, UsageError
from receipt_verifier.fabric.trust import ChannelTrust, load_trust
from receipt_verifier.history import NOT_PROVEN, verify_history
from receipt_verifier.ledger import load_public_key_file

from .client import ClientError, ReceiptClient
from .domains import DOMAINS

SUFFIX = ".receipt.json"
DEFAULT_SERVER = "http://127.0.0.1:8080"


def file_hash(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    return h.hexdigest()


def _key(args: argparse.Namespace) -> str:
    if args.key_file is not None:
        try:
            return str(args.key_file.read_text().strip())
        except OSError as exc:
            raise UsageError(f"{args.key_file}: cannot read the API key ({exc.strerror})") from None
    key = os.environ.get("RECEIPT_API_KEY", "").strip()
    if not key:
        raise UsageError("no API key: pass --key-file FILE or set RECEIPT_API_KEY")
    return key


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _state(doc: dict[str, Any]) -> str:
    receipt = doc.get("receipt", doc)
    state = str(receipt.get("state", "?"))
    return state + (" (with evidence)" if "receipt" in doc else "")


def _has_fabric(doc: dict[str, Any]) -> bool:
    return any(
        a.get("type") == "fabric"
        for b in doc.get("branches", [])
        for op in b.get("ops", [])
        for a in op.get("anchors", [])
    )


async def _final(client: ReceiptClient, proof_id: str, wait: bool, timeout: float) -> dict[str, Any]:
    doc = await client.receipt(proof_id, wait="anchored" if wait else None, timeout=timeout)
    if doc.get("state") == "anchored" and _has_fabric(doc):
        doc = await client.receipt(proof_id, evidence=True)  # self-contained: the blocks travel with it
    return doc


async def _stamp(args: argparse.Namespace) -> int:
    files: list[Path] = args.files
    hashes = [file_hash(f) for f in files]
    async with ReceiptClient(args.server, _key(args), timeout=args.timeout + 30) as client:
        items = await client.submit(hashes, subject=args.subject, domain=args.domain)
        sem = asyncio.Semaphore(32)

        async def one(path: Path, proof_id: str) -> dict[str, Any]:
            async with sem:
                doc = await _final(client, proof_id, args.wait, args.timeout)
            _write(path.with_name(path.name + SUFFIX), doc)
            return doc

        docs = await asyncio.gather(*(one(f, it.proof_id) for f, it in zip(files, items, strict=True)))
    rows = [[str(f), it.proof_id, it.hash[:16] + "…", _state(d)] for f, it, d in zip(files, items, docs, strict=True)]
    print(table(["file", "proof_id", "sha-256", "state"], rows))
    print(f"wrote {len(files)} receipt(s) as FILE{SUFFIX}", file=sys.stderr)
    waiting = [r for r, d in zip(rows, docs, strict=True) if d.get("receipt", d).get("state") != "anchored"]
    if args.wait and waiting:
        print(
            f"{len(waiting)} not anchored within {args.timeout:g} s: run 'receipt-client upgrade' later",
            file=sys.stderr,
        )
        return 1
    return 0


async def _upgrade(args: argparse.Namespace) -> int:
    paths: list[Path] = args.receipts
    docs = []
    for p in paths:
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{p}: not a readable receipt ({exc})") from None
        receipt = doc.get("receipt", doc) if isinstance(doc, dict) else None
        if not isinstance(receipt, dict) or not isinstance(receipt.get("proof_id"), str):
            raise UsageError(f"{p}: not a receipt (no proof_id)")
        docs.append(receipt)
    async with ReceiptClient(args.server, _key(args), timeout=args.timeout + 30) as client:
        new = [await _final(client, d["proof_id"], args.wait, args.timeout) for d in docs]
    rows = []
    for p, old, doc in zip(paths, docs, new, strict=True):
        before = old.get("state", "?")
        _write(p, doc)
        rows.append([str(p), old["proof_id"], before, _state(doc)])
    print(table(["receipt", "proof_id", "was", "now"], rows))
    return 0 if all(d.get("receipt", d).get("state") == "anchored" for d in new) else 1


def _trust(path: Path | None) -> dict[str, ChannelTrust] | None:
    if path is None:
        return None
    try:
        return load_trust(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def _window(doc: Any) -> dict[str, Any]:
    """The bundle's ``window`` member ({} when the service sent something else: the verifier names it)."""
    window = doc.get("window") if isinstance(doc, dict) else None
    return window if isinstance(window, dict) else {}


async def _history(args: argparse.Namespace) -> int:
    trust = _trust(args.trust)
    wait: float | None = args.wait_committed
    if wait is not None and trust is None:
        raise UsageError("--wait-committed needs --trust: the successor is checked against the pinned channels")
    deadline, as_of, said = time.monotonic() + (wait or 0.0), args.as_of, 0.0
    report = None
    async with ReceiptClient(args.server, _key(args)) as client:
        while True:
            doc = await client.history(args.subject, args.domain, as_of=as_of)
            if wait is None:
                break
            window, report = _window(doc), None
            anchors = window.get("anchors")
            if not isinstance(anchors, list) or any(isinstance(a, dict) and a.get("type") == "fabric" for a in anchors):
                report, _ = verify_history(doc, {}, fabric_trust=trust, lane=args.lane)
                if report.problems or report.committed is None or NOT_PROVEN not in report.committed:
                    break  # proven, or nothing a wait would change
            # else its Fabric anchor is still on its way (the local one comes first)
            if time.monotonic() >= deadline:
                break
            if time.monotonic() - said >= 10:
                said = time.monotonic()
                print(
                    f"waiting for the lane's next window to prove window {window.get('window_id')} committed (an"
                    f" idle lane gets an empty one, every 60 s by default; {deadline - said:.0f} s left) ...",
                    file=sys.stderr,
                )
            as_of = window.get("window_end", as_of)  # this window again (the newest anchored that ended by then)
            await asyncio.sleep(args.poll)
    _write(args.output, doc)
    window = _window(doc)
    size = doc["log"].get("size", "?") if isinstance(doc.get("log"), dict) else "?"
    print(f"wrote {args.output}: {size} record(s), as of window {window.get('window_id', '?')}")
    if wait is None:
        return 0
    if report is None:
        print(f"window {window.get('window_id')} has no Fabric anchor after {wait:g} s", file=sys.stderr)
        return 1
    if report.problems:
        print("the bundle does not verify:\n" + "\n".join(f"  {p}" for p in report.problems), file=sys.stderr)
        return 1
    print(f"append-only: {report.append_only}")
    if report.committed is None:
        print("the window has no chained Fabric anchor: there is no commit to prove", file=sys.stderr)
        return 1
    if NOT_PROVEN in report.committed:
        print(f"no successor proves window {report.window_id} committed within {wait:g} s", file=sys.stderr)
        return 1
    print(f"committed: {report.committed}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    keys = [load_public_key_file(k) for k in args.ledger_key]
    verifier = Verifier(keys, fabric_trust=_trust(args.trust))
    policy = AnchorPolicy.parse(args.require_anchors)
    rows, ok = [], True
    for f in args.files:
        receipt = f.with_name(f.name + SUFFIX)
        try:
            record, data = f.read_bytes(), receipt.read_bytes()
        except OSError as exc:
            raise UsageError(f"{exc.filename}: cannot read ({exc.strerror})") from None
        try:
            result = verifier.verify_policy(data, policy, record=record)
        except Error as exc:
            ok = False
            rows.append([str(f), "INVALID", f"{type(exc).__name__}: {exc.diagnostics()}"])
            continue
        anchors = ", ".join(
            f"{a.details.get('channel', a.type)}:{'ok' if a.status.value == 'verified' else a.status.value}"
            for a in result.anchors
        )
        rows.append([str(f), "valid", anchors])
    print(table(["file", "result", "anchors / why"], rows))
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="receipt-client",
        description="Stamp files with the receipt service (only their SHA-256 is sent) and check the receipts.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--server", default=os.environ.get("RECEIPT_SERVER", DEFAULT_SERVER), help="service URL")
    conn.add_argument("--key-file", type=Path, help="file holding the API key (default: $RECEIPT_API_KEY)")
    net = argparse.ArgumentParser(add_help=False, parents=[conn])
    net.add_argument("--wait", action="store_true", help="long-poll until anchored")
    net.add_argument("--timeout", type=float, default=60.0, help="longest wait per receipt, seconds (default 60)")
    s = sub.add_parser("stamp", parents=[net], help="hash files locally, submit, write FILE.receipt.json")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--subject", help="the pseudonymous subject the files belong to (a key with a Table I role)")
    s.add_argument("--domain", choices=DOMAINS, help="data-sharing domain (default: the key's role's own)")
    u = sub.add_parser("upgrade", parents=[net], help="fetch the newer state of receipts (and Fabric evidence)")
    u.add_argument("receipts", nargs="+", type=Path, metavar="FILE.receipt.json")
    h = sub.add_parser(
        "history", parents=[conn], help="fetch a subject's history bundle (the owner's or a granted key)"
    )
    h.add_argument("subject", help="the pseudonymous subject")
    h.add_argument("--domain", required=True, choices=DOMAINS, help="the data-sharing domain of the log")
    h.add_argument("-o", "--output", type=Path, default=Path("history.json"), help="default: history.json")
    h.add_argument("--as-of", metavar="TIME", help="as of the newest window anchored by then (RFC 3339)")
    h.add_argument(
        "--wait-committed",
        type=float,
        metavar="SECONDS",
        help="fetch the window again until a successor proves it committed (spec 14.9), for up to SECONDS",
    )
    h.add_argument("--trust", type=Path, metavar="FILE", help="pinned Fabric trust file (for --wait-committed)")
    h.add_argument("--lane", metavar="L", help="the chain the domain's windows are in (default: the domain)")
    h.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    v = sub.add_parser("verify", help="offline: check FILE against FILE.receipt.json")
    v.add_argument("files", nargs="+", type=Path)
    v.add_argument("--ledger-key", type=Path, action="append", default=[], metavar="FILE")
    v.add_argument("--trust", type=Path, metavar="FILE", help="pinned Fabric trust file")
    v.add_argument("--require-anchors", default="all", metavar="all|any|N")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return _verify(args)
        run = {"stamp": _stamp, "upgrade": _upgrade, "history": _history}[args.command]
        return asyncio.run(run(args))
    except (UsageError, ClientError) as exc:
        print(f"receipt-client: error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except Error as exc:
        print(f"receipt-client: invalid: {exc.diagnostics()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
