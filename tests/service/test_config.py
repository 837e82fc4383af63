"""Settings: defaults < TOML < environment < flags, with errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from receipt_service.config import Settings, load_settings
from receipt_service.errors import ConfigError


def test_defaults_work_out_of_the_box() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert (s.window_seconds, s.max_leaves, s.retention_days) == (1.0, 25_000, None)


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "service.toml"
    cfg.write_text('[service]\nport = 9000\nwindow_seconds = 2.5\ndata_dir = "/srv/receipts"\nmax_leaves = 100\n')
    env = {"RECEIPT_SERVICE_PORT": "9100", "RECEIPT_SERVICE_RETENTION_DAYS": "30", "OTHER": "x"}
    s = load_settings(cfg, env, {"port": 9200, "host": None})
    assert (s.port, s.window_seconds, s.data_dir, s.retention_days, s.max_leaves) == (
        9200,
        2.5,
        Path("/srv/receipts"),
        30.0,
        100,
    )
    assert load_settings(cfg, env).port == 9100
    assert load_settings(cfg, {}).port == 9000


@pytest.mark.parametrize(
    ("toml", "env", "words"),
    [
        ("prot = 1\n", {}, "unknown setting(s) prot"),
        ("port = 'eighty'\n", {}, "port = 'eighty' is not a valid int"),
        ("window_seconds = 0\n", {}, "window_seconds 0.0 must be between"),
        ("max_leaves = 0\n", {}, "max_leaves 0"),
        ("retention_days = -1\n", {}, "retention_days must be positive"),
        ("port = [\n", {}, "not valid TOML"),
        ("", {"RECEIPT_SERVICE_WINDOW_SECONDS": "soon"}, "environment: window_seconds = 'soon'"),
        ("max_hashes_per_request = 10000\n", {}, "max_body_bytes must hold"),
        ("workers = 0\n", {}, "workers 0 must be between 1 and 64"),
        ("memory_trim_seconds = -1\n", {}, "memory_trim_seconds -1.0 must be between 0 (never) and 3600"),
        ("", {"RECEIPT_SERVICE_WORKERS": "65"}, "workers 65 must be between 1 and 64"),
        ("workers = 2\nstore = 'redis://127.0.0.1:6379/0'\n", {}, "with a Redis store, run several instances"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, toml: str, env: dict[str, str], words: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env)
    assert words in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml", {})


def test_domain_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[domains]\ninsurance = ["local"]\n')
    settings = load_settings(cfg, environ={})
    assert settings.targets_for("insurance") == ("local",)
    assert settings.targets_for("medical-history") == ("local",)  # no [fabric]: the local ledger only
    for toml, words in [
        ('[domains]\ninsurance = ["fabric:insurance"]\n', "not 'local' or 'fabric:<channel>'"),
        ('[domains]\ndentistry = ["local"]\n', "domain 'dentistry' is unknown"),
        ("[domains]\ninsurance = []\n", "non-empty list"),
        ('[domains]\ninsurance = ["local", "local"]\n', "twice"),
    ]:
        cfg.write_text(toml)
        with pytest.raises(ConfigError, match=words):
            load_settings(cfg, environ={})


FABRIC = """[fabric]
msp_id = "HospitalsMSP"
cert = "c.pem"
key = "k.pem"
channels = ["medical-history"]
[[fabric.gateways]]
endpoint = "127.0.0.1:7051"
tls_root_cert = "ca.pem"
"""


@pytest.mark.parametrize(("line", "batch"), [("", 32), ("chain_batch = 1\n", 1), ("chain_batch = 64\n", 64)])
def test_fabric_chain_batch(tmp_path: Path, line: str, batch: int) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(FABRIC.replace("[[fabric.gateways]]", line + "[[fabric.gateways]]"))
    fabric = load_settings(cfg, environ={}).fabric
    assert fabric is not None and fabric.chain_batch == batch


@pytest.mark.parametrize("value", ["0", "65", "true", '"32"'])
def test_fabric_chain_batch_out_of_range_is_named(tmp_path: Path, value: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(FABRIC.replace("[[fabric.gateways]]", f"chain_batch = {value}\n[[fabric.gateways]]"))
    with pytest.raises(ConfigError, match="chain_batch must be an integer from 1 to 64"):
        load_settings(cfg, environ={})
