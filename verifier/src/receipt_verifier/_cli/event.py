"""``receipt-verify event``: an access event's signature (pinned JWKs) and its anchoring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._progress import table
from ..access_event import jwk_public_key, parse_event, thumbprint, verify_signature
from ..errors import EventSignatureError
from ..ledger import load_public_key_file
from ..verify import AnchorPolicy, Verifier
from .common import EXIT_VALID, anchor_summary, load_trust_file, read_json


def main(argv: list[str]) -> int:
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
    doc = read_json(args.event)
    receipt: Any = doc.get("receipt") if isinstance(doc, dict) and "event" in doc else None
    event = parse_event(doc["event"] if isinstance(doc, dict) and "event" in doc else doc)
    keys = {}
    for path in args.key:
        jwk = read_json(path)
        key = jwk_public_key(jwk.get("jwk", jwk) if isinstance(jwk, dict) else jwk)
        keys[thumbprint(key)] = key
    if event.key_id not in keys:
        raise EventSignatureError(f"the event is signed with key {event.key_id}, which no --key pins")
    verify_signature(event, keys[event.key_id])
    row = [event.action, event.owner, event.receiver, event.domain, event.doc["time"], "ok"]
    if args.receipt is not None:
        receipt = read_json(args.receipt)
    if receipt is None:
        print(table(["action", "owner", "receiver", "domain", "time", "signature"], [row]))
        print("no receipt given: the event is authentic, its anchoring is not checked", file=sys.stderr)
        return EXIT_VALID
    verifier = Verifier(
        [load_public_key_file(k) for k in args.ledger_key],
        fabric_trust=load_trust_file(args.trust) if args.trust else None,
    )
    result = verifier.verify_policy(receipt, AnchorPolicy.parse(args.require_anchors), record_hash=event.event_hash())
    print(
        table(
            ["action", "owner", "receiver", "domain", "time", "signature", "anchors"],
            [[*row, anchor_summary(result.to_dict())]],
        )
    )
    return EXIT_VALID
