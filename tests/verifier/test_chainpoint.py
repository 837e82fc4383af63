"""Our Chainpoint v4 exports pass Chainpoint's own schema (2.1.1) and parser (5.0.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from receipt_verifier import parse_receipt
from receipt_verifier.chainpoint import to_chainpoint_v4
from receipt_verifier.errors import UsageError
from tests.conftest import ROOT, VECTORS

CHECK = ROOT / "proof_spec" / "chainpoint-check"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
EXPORTED = [v for v in MANIFEST["vectors"] if "chainpoint_v4" in v]


def run_chainpoint(files: list[Path]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is required for the Chainpoint cross-check (bash .ci/run installs everything)"
    assert (CHECK / "node_modules" / "chainpoint-parse").is_dir(), (
        "run `npm ci --prefix proof_spec/chainpoint-check` first (bash .ci/run does)"
    )
    out = subprocess.run([node, str(CHECK / "check.js"), *map(str, files)], check=True, capture_output=True, text=True)
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def test_pinned_versions() -> None:
    lock = json.loads((CHECK / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/chainpoint-parse"]["version"] == "5.0.1"
    assert lock["packages"]["node_modules/chainpoint-proof-json-schema"]["version"] == "2.1.1"


def test_shipped_exports_parse_to_our_roots() -> None:
    assert EXPORTED, "the manifest lists Chainpoint exports"
    results = run_chainpoint([VECTORS / v["chainpoint_v4"]["file"] for v in EXPORTED])
    for vector, res in zip(EXPORTED, results, strict=True):
        assert res["valid"], (vector["file"], res.get("errors"))
        got = {a["anchor_id"]: a["expected_value"] for a in res["anchors"]}
        assert got == vector["chainpoint_v4"]["expected"]
        # and that value is the root our own verifier computes for the v1 receipt
        assert set(got.values()) == {a["expected_value"] for a in vector["anchors"].values()}


def test_shipped_exports_match_the_exporter() -> None:
    for v in EXPORTED:
        receipt = parse_receipt((VECTORS / v["file"]).read_bytes())
        assert to_chainpoint_v4(receipt) == json.loads((VECTORS / v["chainpoint_v4"]["file"]).read_text())


def test_tampered_export_is_caught_by_chainpoint(tmp_path: Path) -> None:
    doc = json.loads((VECTORS / EXPORTED[0]["chainpoint_v4"]["file"]).read_text())
    doc["hash_received"] = "2025-11-21T08:00:00.1234567Z"  # milliseconds are not Chainpoint
    bad = tmp_path / "bad.chp.json"
    bad.write_text(json.dumps(doc))
    assert run_chainpoint([bad])[0]["valid"] is False


def test_pending_receipt_cannot_be_exported() -> None:
    with pytest.raises(UsageError, match="pending"):
        to_chainpoint_v4(parse_receipt((VECTORS / "valid/pending.json").read_bytes()))
