"""Every vector in proof_spec/vectors/manifest.json behaves as the manifest says."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import receipt_verifier
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.errors import Error
from tests.conftest import ROOT, VECTORS

MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
VALID = [v for v in MANIFEST["vectors"] if v["valid"]]
INVALID = [v for v in MANIFEST["vectors"] if not v["valid"]]


@pytest.mark.parametrize("vector", VALID, ids=[v["file"] for v in VALID])
def test_valid_vector(vector: dict[str, Any], ledger_key: Ed25519PublicKey) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    result = Verifier([ledger_key]).verify_policy(
        data, AnchorPolicy.parse(vector["policy"]), record_hash=vector["record_hash"]
    )
    assert result.receipt.state == vector["state"]
    got = {
        a.anchor_id: {"type": a.type, "expected_value": a.expected_value, "status": a.status.value}
        for a in result.anchors
    }
    assert got == vector["anchors"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["file"] for v in INVALID])
def test_invalid_vector(vector: dict[str, Any], ledger_key: Ed25519PublicKey) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    error_type = getattr(receipt_verifier, vector["error"])
    with pytest.raises(error_type) as info:
        Verifier([ledger_key]).verify_policy(data, AnchorPolicy.parse(vector["policy"]))
    assert type(info.value).__name__ == vector["error"]
    assert str(info.value)  # every error says what is wrong


def test_fabric_anchor_is_never_verified_without_evidence(ledger_key: Ed25519PublicKey) -> None:
    data = (VECTORS / "valid/local-and-fabric.json").read_bytes()
    with pytest.raises(receipt_verifier.AnchorPolicyError, match="no evidence"):
        Verifier([ledger_key]).verify_policy(data, AnchorPolicy.parse("all"))


def test_without_the_pinned_key_nothing_verifies() -> None:
    data = (VECTORS / "valid/leaf0-of-3.json").read_bytes()
    result = Verifier().verify(data)
    assert [a.status.value for a in result.anchors] == ["not_verified"]
    assert "no pinned ledger key" in result.anchors[0].reason


def test_record_hash_mismatch_is_an_error(ledger_key: Ed25519PublicKey) -> None:
    data = (VECTORS / "valid/leaf0-of-3.json").read_bytes()
    with pytest.raises(receipt_verifier.HashMismatchError):
        Verifier([ledger_key]).verify(data, record=b"not the record")


def test_record_bytes_are_accepted(ledger_key: Ed25519PublicKey) -> None:
    sys.path.insert(0, str(ROOT / "proof_spec" / "tools"))
    try:
        from make_vectors import RECORDS
    finally:
        sys.path.pop(0)
    data = (VECTORS / "valid/leaf0-of-3.json").read_bytes()
    assert Verifier([ledger_key]).verify(data, record=RECORDS[0]).root is not None


def test_every_error_class_in_manifest_is_public() -> None:
    for v in INVALID:
        assert issubclass(getattr(receipt_verifier, v["error"]), Error)


def test_vectors_are_reproducible(tmp_path: Path) -> None:
    """Regenerating the vectors from the code gives byte-identical files (vectors/fabric is captured from a
    real network by tools/capture_fabric_vectors.py, and so is vectors/fabric-bft, not generated)."""
    subprocess.run([sys.executable, str(ROOT / "proof_spec/tools/make_vectors.py"), str(tmp_path)], check=True)
    cmp = filecmp.dircmp(
        VECTORS, tmp_path, ignore=["fabric", "fabric-bft", "transition.json"]
    )  # transition: its own tool

    def diffs(c: filecmp.dircmp[str]) -> list[str]:
        out = [*c.diff_files, *c.left_only, *c.right_only]
        for sub in c.subdirs.values():
            out += diffs(sub)
        return out

    assert diffs(cmp) == []


def test_spec_files_shipped_with_the_verifier_are_identical() -> None:
    shipped = ROOT / "verifier/src/receipt_verifier/_spec"
    for name in ("receipt.schema.json", "context-v1.jsonld", "context-v2.jsonld"):
        assert (shipped / name).read_bytes() == (ROOT / "proof_spec" / name).read_bytes(), name
