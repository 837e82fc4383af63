"""The verifier never touches the network and never pulls in service code or GPL code."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT, VECTORS

PROBE = """
import json, sys
events = []
sys.addaudithook(lambda e, a: events.append(e) if e.startswith("socket.") else None)
from receipt_verifier._cli import main
rc = main([{inputs}, "--ledger-key", {key}, "--strict-schema", "--json"])
import receipt_verifier.chainpoint, receipt_verifier.schema
mods = sorted(m for m in sys.modules if m.split(".")[0] in
              ("aiohttp", "redis", "grpc", "pymerkle", "receipt_service", "requests", "urllib3", "socket"))
sys.stdout = sys.__stdout__
print("PROBE" + json.dumps({{"rc": rc, "events": events, "mods": mods}}))
"""


def test_no_socket_is_opened_and_no_service_code_is_loaded() -> None:
    code = PROBE.format(
        inputs=", ".join(repr(str(p)) for p in (VECTORS / "valid", VECTORS / "invalid")),
        key=repr(str(VECTORS / "ledger-key.pem")),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    probe = json.loads(out[out.index("PROBE") + 5 :])
    assert probe["rc"] == 1  # the invalid vectors are invalid
    assert probe["events"] == []
    assert [m for m in probe["mods"] if m != "socket"] == []


def test_verifier_distribution_dependencies() -> None:
    meta = tomllib.loads((ROOT / "verifier/pyproject.toml").read_text())
    deps = " ".join(meta["project"]["dependencies"]).lower()
    for banned in ("aiohttp", "redis", "grpc", "pymerkle", "health-receipt-service"):
        assert banned not in deps
    src = ROOT / "verifier/src/receipt_verifier"
    for path in src.rglob("*.py"):
        text = path.read_text()
        for banned in ("import aiohttp", "import redis", "import grpc", "pymerkle", "receipt_service"):
            assert banned not in text, f"{path.name} mentions {banned}"


@pytest.mark.parametrize("vectors", ["fabric", "fabric-bft"])
def test_fabric_evidence_is_checked_without_a_socket_or_grpc(vectors: str) -> None:
    fabric = VECTORS / vectors
    code = PROBE.replace('"--strict-schema", ', '"--trust", {trust}, ').format(
        inputs=repr(str(fabric / "bundle.json")),
        key=repr(str(fabric / "ledger-key.pub.json")),
        trust=repr(str(fabric / "trust.json")),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    probe = json.loads(out[out.index("PROBE") + 5 :])
    assert probe["rc"] == 0  # all four anchors verified
    assert probe["events"] == []
    assert [m for m in probe["mods"] if m != "socket"] == []
