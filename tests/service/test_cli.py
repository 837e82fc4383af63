"""``receipt-service``: keys, demo and serve's error handling, run through the real entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from receipt_service._cli import SAMPLE_RECORDS, main
from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.ledger import load_public_key_file


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--tenant", "clinic-a", "--scope", "read", "--data-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("hrk_")
    _, key_id, secret = token.split("_", 2)  # the secret is URL-safe base64: it may hold "_" too
    assert len(key_id) == 16 and len(secret) == 43
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "clinic-a" in listed and "active" in listed
    assert secret not in listed  # the secret is never shown again
    assert main(["keys", "revoke", key_id, "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "revoke", key_id, "--data-dir", str(tmp_path)]) == 1
    assert "no active key" in capsys.readouterr().err
    main(["keys", "list", "--data-dir", str(tmp_path)])
    row = next(line for line in capsys.readouterr().out.splitlines() if key_id in line)
    assert "active" not in row and "revoked 20" in row and row.split()[-1].endswith("Z")  # the revocation time


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["keys", "create", "--tenant", "bad name!"], "tenant name"),
        (["keys", "create", "--tenant", "a", "--scope", "admin"], "scopes must be"),
    ],
)
def test_keys_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 1
    assert words in capsys.readouterr().err


def test_serve_refuses_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--data-dir", str(tmp_path), "--window-seconds", "0"]) == 1
    assert "window_seconds" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[service]\nwindow = 1\n")
    assert main(["serve", "--config", str(cfg)]) == 1
    assert "unknown setting(s) window" in capsys.readouterr().err


def test_demo_runs_the_real_service_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("local verified") == len(SAMPLE_RECORDS)
    receipts = sorted((tmp_path / "receipts").glob("*.json"))
    assert len(receipts) == len(SAMPLE_RECORDS)
    verifier = Verifier([load_public_key_file(tmp_path / "ledger-key.pub.json")])
    for path in receipts:
        assert verifier.verify_policy(path.read_bytes(), AnchorPolicy()).satisfies(AnchorPolicy())
    assert json.loads((tmp_path / "ledger-key.pub.json").read_text())["algorithm"] == "Ed25519"


def test_console_script_is_installed() -> None:
    exe = shutil.which("receipt-service", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "serve" in out and "keys" in out and "demo" in out


def test_serve_refuses_a_bad_host_before_it_creates_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["serve", "--data-dir", str(data), "--host", "256.1.1.1"]) == 1
    assert "not a valid IP address" in capsys.readouterr().err
    assert not (data / "default-api-key").exists()


def test_the_data_directory_is_private_and_the_public_key_is_written(tmp_path: Path) -> None:
    from .procs import server

    data = tmp_path / "data"
    with server(data, 0.2):
        pass
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("receipts.sqlite3", "ledger.jsonl", "ledger-key.pem", "default-api-key"):
        assert (data / name).stat().st_mode & 0o077 == 0, name
    doc = json.loads((data / "ledger-key.pub.json").read_text())
    assert doc["algorithm"] == "Ed25519" and "PRIVATE" not in doc["public_key_pem"]
    load_public_key_file(data / "ledger-key.pub.json")


def test_keys_create_with_a_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--tenant", "clinic-x", "--role", "provider", "--data-dir", str(tmp_path)]) == 0
    assert "role provider" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "audit", "--role", "auditor", "--data-dir", str(tmp_path)]) == 0
    assert "scopes read)" in capsys.readouterr().err  # an auditor's key is read-only by default
    assert (
        main(["keys", "create", "--tenant", "a", "--role", "auditor", "--scope", "submit", "--data-dir", str(tmp_path)])
        == 1
    )
    assert "read-only" in capsys.readouterr().err
    main(["keys", "list", "--data-dir", str(tmp_path)])
    listed = capsys.readouterr().out
    assert "provider" in listed and "auditor" in listed
    with pytest.raises(SystemExit):
        main(["keys", "create", "--tenant", "a", "--role", "patient", "--data-dir", str(tmp_path)])


def test_demo_paper_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "paper", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the owner has not granted access" in out and "the owner's latest decision is a revoke" in out
    assert "all 10 receipts anchored and verified" in out
    assert "patient-0042" not in (tmp_path / "receipts.medical-history.sqlite3").read_bytes().decode("latin-1")
