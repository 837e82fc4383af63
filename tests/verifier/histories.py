"""History bundles built in the test, with the verifier's own primitives and the vector ledger key."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from receipt_verifier.history import HISTORY_CONTEXT, HISTORY_TYPE, pack
from receipt_verifier.ledger import GENESIS_PREV, key_id, sign_entry
from receipt_verifier.logs import log_root, record_leaf
from receipt_verifier.model import LedgerEntry
from receipt_verifier.proof_id import make_proof_id, unix_ns_to_ticks
from receipt_verifier.sorted_heads import HeadsTree

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"health-receipt v1 test-vector ledger key").digest())
PUBLIC: Ed25519PublicKey = KEY.public_key()
KID = key_id(PUBLIC)
KEYS = {KID: PUBLIC}
DOMAIN = "medical-history"
SUBJECT = "did:example:patient-0001"
OTHER = "did:example:patient-0002"
WINDOW_END = "2025-11-21T08:02:01Z"
BASE_NS = 1_763_712_000_000_000_000  # 2025-11-21T08:00:00Z


@dataclass(frozen=True)
class Rec:
    """One record of a subject's log, with the leaf value the log holds for it."""

    hash: bytes
    proof_id: bytes
    nonce: bytes
    leaf: bytes


def records(subject: str, n: int, domain: str = DOMAIN) -> list[Rec]:
    """The first ``n`` records of a subject's log, each bound to its position."""
    out = []
    for i in range(n):
        h = hashlib.sha256(f"{domain}/{subject}/{i}".encode()).digest()
        pid = make_proof_id(unix_ns_to_ticks(BASE_NS + i * 1_000_000), 0x1B3, h.hex()).bytes
        nonce = hashlib.sha256(b"nonce" + h).digest()[:16]
        out.append(Rec(h, pid, nonce, record_leaf(nonce, pid, h, domain, subject, i)))
    return out


def log(shown: list[Rec], full: list[Rec] | None = None) -> dict[str, Any]:
    """A log member holding ``shown`` and naming the head of ``full`` (default: ``shown``)."""
    named = shown if full is None else full
    return {
        "size": len(named),
        "root": log_root([r.leaf for r in named]).hex(),
        "hashes": pack([r.hash for r in shown]),
        "proof_ids": pack([r.proof_id for r in shown]),
        "nonces": pack([r.nonce for r in shown]),
        "leaves": pack([r.leaf for r in shown]),
    }


def heads(logs: dict[str, list[Rec]]) -> HeadsTree:
    """The heads tree of these logs."""
    return HeadsTree({s: (len(rs), log_root([r.leaf for r in rs])) for s, rs in logs.items() if rs})


def entry(tree: HeadsTree, seq: int = 0, **changes: Any) -> LedgerEntry:
    """A v2 ledger entry for a window of ``DOMAIN`` committing to ``tree``."""
    fields: dict[str, Any] = {
        "seq": seq,
        "prev": GENESIS_PREV,
        "window_id": "w1763712120000",
        "tree_index": 0,
        "tree_size": 5,
        "root": hashlib.sha256(b"window tree").hexdigest(),
        "window_start": "2025-11-21T08:02:00Z",
        "window_end": WINDOW_END,
        "time": "2025-11-21T08:02:01.2Z",
        "domain": DOMAIN,
        "heads_root": tree.root.hex(),
        "heads_size": tree.size,
    }
    fields.update(changes)
    return LedgerEntry(**fields)


def local_anchor(e: LedgerEntry, key: Ed25519PrivateKey = KEY) -> dict[str, Any]:
    """The local anchor of a signed ledger entry."""
    kid = key_id(key.public_key())
    return {
        "type": "local",
        "anchor_id": f"{kid}:{e.seq}",
        "key_id": kid,
        "entry": e.to_dict(),
        "signature": sign_entry(key, e),
    }


def window(e: LedgerEntry, anchors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A bundle's window member for entry ``e`` (anchored by it unless ``anchors`` is given)."""
    return {
        "window_id": e.window_id,
        "tree_index": e.tree_index,
        "tree_size": e.tree_size,
        "root": e.root,
        "window_end": e.window_end,
        "heads_root": e.heads_root,
        "heads_size": e.heads_size,
        "anchors": [local_anchor(e)] if anchors is None else anchors,
    }


def bundle(subject: str, logs: dict[str, list[Rec]], shown: list[Rec] | None = None) -> dict[str, Any]:
    """A bundle of ``subject``'s log among ``logs`` (``shown``: the records it carries, default all)."""
    tree = heads(logs)
    full = logs.get(subject, [])
    return {
        "@context": HISTORY_CONTEXT,
        "type": HISTORY_TYPE,
        "subject": subject,
        "domain": DOMAIN,
        "as_of": "2025-11-21T08:03:00.000000Z",
        "log": log(full if shown is None else shown, full),
        "head_proof": tree.prove(subject),
        "window": window(entry(tree)),
    }


AS_OF = datetime(2025, 11, 21, 9, tzinfo=UTC)
LOGS = {SUBJECT: records(SUBJECT, 3), OTHER: records(OTHER, 2)}


def window_change(**changes: Any) -> dict[str, Any]:
    """A bundle of ``SUBJECT`` in ``LOGS`` whose window has these members changed."""
    doc = bundle(SUBJECT, LOGS)
    doc["window"].update(changes)
    return doc
