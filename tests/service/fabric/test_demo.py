"""``receipt-service demo --fabric``: the paper's story anchored on the three channels, checked offline by
the insurer under a trust file of the channels' config blocks (issue 24). Run on the session's network,
which the demo finds up and leaves up (``--keep``); brought up from nothing it is ``fabric up`` itself."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from receipt_service.fabric.network import Network


def test_demo_fabric_tells_the_whole_story(net: Network, tmp_path: Path) -> None:
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "receipt_service._cli", "demo", "--fabric", "--fabric-dir", str(net.layout.root)]
    out = subprocess.run(
        [*argv, "--keep", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "insurer fetches the medical history as a bundle" in text
    assert re.search(r"all \d+ receipts anchored and verified", text)
    assert text.count("fabric verified, local verified") == 10  # every record and event, on its domain's channel
    assert "the insurer checks the patient's medical history offline" in text
    assert "  complete     all 2 records of the subject's log" in text
    assert "  append-only  checked by both organisations' peers" in text  # the window's place in its chain
    assert "  committed    medical-history block " in text  # proven by a successor, or said not to be
    proven = re.search(
        r"proven on Fabric: (\d+) anchors \(each domain's roots on its own channel\) in (\d+) blocks of 3 channels \(([^)]*)\); endorsed by ([^;]*); blocks signed by (.*)",
        text,
    )
    assert proven is not None, text[-3000:]
    assert proven[3] == "insurance, medical-history, personal-health"
    assert proven[4] == "HospitalsMSP, InsurersMSP"
    assert len(proven[5].split(", ")) >= 3  # SmartBFT: a quorum of consenters of distinct organisations
    assert "network kept running" in text and all(net.pid(n) is not None for n in net.layout.nodes)
    assert took < 120, f"the demo took {took:.0f} s on a running network"
