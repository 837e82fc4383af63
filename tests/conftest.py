"""Shared fixtures: the spec's vectors and the pinned test ledger key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, settings

from receipt_verifier.ledger import load_public_key_file

# A shared two-core machine can be slow at any moment: examples have no deadline and slow data generation is
# not a failure (the properties still run every example; a test's own @settings adds to this)
settings.register_profile("shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-machine")

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "proof_spec" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
    return doc


@pytest.fixture(scope="session")
def ledger_key() -> Ed25519PublicKey:
    return load_public_key_file(VECTORS / "ledger-key.pem")


def load_vector(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return doc


def service_receipts(ledger_dir: Path, n: int, max_leaves: int | None = None) -> list[dict[str, Any]]:
    """Anchored receipts (as JSON objects) for n fresh hashes: the service core, a local ledger in ledger_dir."""
    from receipt_service.ids import ProofIdIssuer
    from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
    from receipt_service.receipts import Submission, build_window, render_tree
    from receipt_verifier import receipt_to_dict

    issuer = ProofIdIssuer(5)
    subs = []
    for _ in range(n):
        h = os.urandom(32).hex()
        x = issuer.issue(h, 1_763_712_000_000_000_000)
        subs.append(Submission(x.proof_id, h, x.hash_received, os.urandom(16)))
    ledger = LocalLedger(ledger_dir)
    out: list[dict[str, Any]] = []
    for wt in build_window("w-9", subs, max_leaves=max_leaves or n):
        root = TreeRoot("w-9", wt.tree_index, wt.tree.size, wt.root_hex, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
        signed = ledger.append(root, "2026-01-01T00:00:01Z")
        out += [json.loads(json.dumps(receipt_to_dict(r))) for r in render_tree(wt, [to_anchor(ledger.key_id, signed)])]
    return out


def forked_receipts(tmp_path: Path, n: int, max_leaves: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path]:
    """Receipts of two ledgers signed with one key (the key holder equivocating: the same seqs, other
    entries), and that key's public PEM: the second list forks the first at every seq."""
    import shutil

    from cryptography.hazmat.primitives import serialization

    first = service_receipts(tmp_path / "a", n, max_leaves)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "ledger-key.pem", tmp_path / "b" / "ledger-key.pem")
    second = service_receipts(tmp_path / "b", n, max_leaves)
    private = serialization.load_pem_private_key((tmp_path / "a" / "ledger-key.pem").read_bytes(), password=None)
    pub = tmp_path / "ledger-key.pub.pem"
    pub.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return first, second, pub


def leaf0_of_3_limits() -> list[tuple[Any, bool]]:
    """(limits, whether a one-pass path takes valid/leaf0-of-3.json under them): each limit at its edge
    (the vector has 11 ops, one anchor, one branch at depth 1)."""
    from receipt_verifier import Limits

    return [
        (Limits(max_ops=11), True),
        (Limits(max_ops=10), False),
        (Limits(max_anchors=1), True),
        (Limits(max_anchors=0), False),
        (Limits(max_branches=1, max_depth=1), True),
        (Limits(max_branches=0), False),
        (Limits(max_depth=0), False),
    ]
