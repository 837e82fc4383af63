"""Service settings: built-in defaults, then a TOML file, then environment variables, then flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "RECEIPT_SERVICE_"


@dataclass(frozen=True)
class Settings:
    """Every knob of ``receipt-service serve``; each default works out of the box."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("receipt-data")
    window_seconds: float = 1.0
    max_leaves: int = 25_000
    max_hashes_per_request: int = 1000
    max_ids_per_request: int = 250
    max_body_bytes: int = 256 * 1024
    max_wait_seconds: float = 60.0
    retention_days: float | None = None
    anchor_retry_max_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    key_cache_seconds: float = 2.0

    def check(self) -> Settings:
        """Reject values the service cannot run with, naming the setting."""
        problems = []
        if not 0 < self.port < 65536 and self.port != 0:
            problems.append(f"port {self.port} is outside 0..65535")
        if not 0.01 <= self.window_seconds <= 3600:
            problems.append(f"window_seconds {self.window_seconds} must be between 0.01 and 3600")
        if not 1 <= self.max_leaves <= 2**32:
            problems.append(f"max_leaves {self.max_leaves} must be between 1 and 2^32")
        if not 1 <= self.max_hashes_per_request <= 100_000:
            problems.append("max_hashes_per_request must be between 1 and 100000")
        if not 1 <= self.max_ids_per_request <= 10_000:
            problems.append("max_ids_per_request must be between 1 and 10000")
        if self.max_body_bytes < 32 * self.max_hashes_per_request:
            problems.append("max_body_bytes must hold max_hashes_per_request raw hashes (32 bytes each)")
        if self.retention_days is not None and self.retention_days <= 0:
            problems.append("retention_days must be positive (leave it unset to keep receipts forever)")
        if self.max_wait_seconds < 0 or self.anchor_retry_max_seconds <= 0 or self.shutdown_grace_seconds < 0:
            problems.append("max_wait_seconds, anchor_retry_max_seconds and shutdown_grace_seconds must be positive")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    default = getattr(Settings, name)
    try:
        if name == "data_dir":
            return Path(str(value)).expanduser()
        if name == "retention_days":
            if value in (None, "", "forever"):
                return None
            return float(value)
        bad = isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
        if isinstance(default, int) and not bad:
            return int(value)
        if isinstance(default, float) and not isinstance(value, bool):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{source}: {name} = {value!r} is not a valid {type(default).__name__}")


def _apply(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    return replace(settings, **{k: _coerce(k, v, source) for k, v in values.items()})


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < TOML file (``[service]`` table or top level) < ``RECEIPT_SERVICE_*`` < flags."""
    settings = Settings()
    if config_file is not None:
        try:
            doc = tomllib.loads(config_file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        table = doc.get("service", doc)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {config_file}: [service] must be a table")
        settings = _apply(settings, table, str(config_file))
    env = os.environ if environ is None else environ
    from_env = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    from_env.pop("config", None)
    settings = _apply(settings, from_env, "environment")
    if overrides:
        settings = _apply(settings, {k: v for k, v in overrides.items() if v is not None}, "command line")
    return settings.check()
