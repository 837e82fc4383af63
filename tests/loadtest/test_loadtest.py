"""The load tools run end to end against a real service (a smoke run: figures are not asserted)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_load_client_runs_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "load.csv"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtest" / "loadclient.py"),
            "--seconds",
            "1",
            "--window",
            "0.2",
            "--anchored-concurrency",
            "5",
            "--paced-rate",
            "5",
            "--csv",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "single-hash requests" in proc.stdout and "submit to anchored" in proc.stdout
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["phase"] for r in rows] == [
        "single-hash requests",
        "1000-hash batches, closed loop x8",
        "1000-hash batches at 5/s",
        "submit to anchored",
    ]
    for r in rows:
        assert int(r["requests"]) > 0 and int(r["errors"]) == 0


def test_the_wrk_phases_drive_the_same_service(tmp_path: Path) -> None:
    """wrk (installed by ./run test) sends single hashes and 1000-hash batches; the service acknowledges them."""
    out = tmp_path / "wrk.csv"
    proc = subprocess.run(
        [
            *(sys.executable, str(ROOT / "loadtest" / "loadclient.py"), "--phases", "wrk-single,wrk-batch"),
            *("--seconds", "1", "--concurrency", "4", "--batch-concurrency", "2", "--csv", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "(wrk)" in proc.stdout
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["phase"] for r in rows] == ["single-hash requests (wrk)", "1000-hash batches, closed loop x2 (wrk)"]
    for r in rows:
        assert int(r["requests"]) > 0 and int(r["errors"]) == 0
        assert float(r["ack_p99_ms"]) >= float(r["ack_p50_ms"]) > 0
    assert int(rows[1]["hashes"]) == 1000 * int(rows[1]["requests"])


@pytest.mark.parametrize("instances", [1, 3])
def test_locust_users_run_headless(tmp_path: Path, instances: int) -> None:
    """On one SQLite service, and spread over three instances on one Redis (receipts read across them)."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtest" / "run_locust.py"),
            "--users",
            "12",
            "--spawn-rate",
            "12",
            "--run-time",
            "4s",
            "--window",
            "0.2",
            "--out",
            str(tmp_path),
            "--instances",
            str(instances),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    stats = {r["Name"]: r for r in csv.DictReader((tmp_path / "locust_stats.csv").read_text().splitlines())}
    assert int(stats["Aggregated"]["Request Count"]) > 0
    assert int(stats["Aggregated"]["Failure Count"]) == 0
    assert int(stats["POST /hashes (single)"]["Request Count"]) > 0
    html = (tmp_path / "locust_report.html").read_text()
    assert len(html) > 1000
    hosts = set(re.findall(r"http://127\.0\.0\.1:\d+", html))
    assert len(hosts) == instances, hosts  # the report names every instance the users were spread over
    if instances > 1:
        assert f"({instances} instances, users round robin)" in html
