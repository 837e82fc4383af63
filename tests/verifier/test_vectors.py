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


# Each invalid vector as written and, but for a repeated key (decoding drops one), in the other two layouts
_LAYOUTS = [
    (v, layout)
    for v in INVALID
    for layout in ("as written", "compact", "decoded")
    if layout == "as written" or v["file"] != "invalid/key-repeated.json"
]


@pytest.mark.parametrize(("vector", "layout"), _LAYOUTS, ids=[f"{v['file']}-{layout}" for v, layout in _LAYOUTS])
def test_invalid_vector(vector: dict[str, Any], layout: str, ledger_key: Ed25519PublicKey) -> None:
    """Refused with its error whichever path takes it: the text path (the service's compact layout),
    the one-pass walk of a decoded document, or the general codec (the vectors' indented layout)."""
    data: bytes | dict[str, Any] = (VECTORS / vector["file"]).read_bytes()
    if layout != "as written":
        doc = json.loads(data)
        data = json.dumps(doc, separators=(",", ":")).encode() if layout == "compact" else doc
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


@pytest.mark.parametrize("compact", [False, True])
def test_a_local_anchor_of_a_tree_of_another_size_fails(compact: bool, ledger_key: Ed25519PublicKey) -> None:
    """Spec section 5.1: the entry's tree_size must be the receipt's. Leaf 0 of 4 has the path shape of
    leaf 0 of 3, so the branch still computes the signed root: only this check refuses the receipt."""
    doc = json.loads((VECTORS / "valid/leaf0-of-3.json").read_text())
    doc["tree"]["tree_size"] = 4
    data = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=1)
    [anchor] = Verifier([ledger_key]).verify(data).anchors
    assert anchor.status.value == "failed"
    assert anchor.reason == "ledger entry 0 is for another tree (window, index or size differ)"
