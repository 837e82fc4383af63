"""Fabric's programs and the anchor chaincode server, built once and cached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from .layout import NetworkError, Progress, _quiet

REPO = Path(__file__).resolve().parents[3]
INSTALL_SCRIPT = REPO / "chaincode" / "network" / "install-fabric.sh"
BUILDER_DIR = REPO / "chaincode" / "network" / "ccaas"
CHAINCODE_SRC = REPO / "chaincode" / "anchor"
CACHE = Path(os.environ.get("FABRIC_CACHE", Path.home() / ".cache" / "health-receipts" / "fabric"))


def fabric_home(progress: Progress = _quiet) -> Path:
    """Fabric's programs (``bin/``, ``config/``), built once from the pinned source and cached."""
    if not INSTALL_SCRIPT.exists():
        raise NetworkError(f"{INSTALL_SCRIPT} is missing: 'fabric up' runs from a checkout of the repository")
    progress("Fabric programs: checking the build cache (a cold build takes about 2 minutes)")
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), str(CACHE)], stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False
    )
    if proc.returncode != 0:
        raise NetworkError("building Fabric's programs failed (see the messages above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def chaincode_binary(progress: Progress = _quiet) -> Path:
    """The anchor chaincode server, built with ``go build`` once per source checksum and cached."""
    h = hashlib.sha256()
    for path in sorted(CHAINCODE_SRC.glob("*")):
        if path.suffix in (".go", ".mod", ".sum") and not path.name.endswith("_test.go"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    out = CACHE.parent / "chaincode" / h.hexdigest()[:16] / "anchorcc"
    if out.exists():
        return out
    progress("anchor chaincode: go build (about 40 s cold)")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"GOTOOLCHAIN": "auto", **os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-o", str(out) + ".tmp", "."],
        cwd=CHAINCODE_SRC,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetworkError(f"building the anchor chaincode failed:\n{proc.stderr[-3000:]}")
    os.replace(str(out) + ".tmp", out)
    return out
