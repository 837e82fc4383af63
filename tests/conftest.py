"""Shared fixtures: the spec's vectors and the pinned test ledger key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receipt_verifier.ledger import load_public_key_file

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
