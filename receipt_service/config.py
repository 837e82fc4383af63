"""Service settings: built-in defaults, then a TOML file, then environment variables, then flags."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .domains import check_domain
from .errors import ConfigError
from .stores.workers import MAX_WORKERS

ENV_PREFIX = "RECEIPT_SERVICE_"


CHANNEL_NAME = re.compile(r"[a-z][a-z0-9.-]{0,248}")
CHAIN_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class GatewaySettings:
    """One Fabric gateway peer."""

    endpoint: str
    tls_root_cert: Path
    server_name: str | None = None


@dataclass(frozen=True)
class FabricSettings:
    """The ``[fabric]`` table: who signs, which gateway peers, which channels (``fabric up`` writes one)."""

    msp_id: str
    cert: Path
    key: Path
    channels: tuple[str, ...]
    gateways: tuple[GatewaySettings, ...]
    chaincode: str = "anchor"
    concurrency: int = 32
    chain_prefix: str = ""  # lanes are chained as "<prefix>.<domain>" (several deployments on one channel)
    chain_batch: int = 32  # a backlog's windows per AppendWindows transaction (1: one window per transaction)


@dataclass(frozen=True)
class Settings:
    """Every knob of ``receipt-service serve``; each default works out of the box."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("receipt-data")
    window_seconds: float = 1.0
    max_leaves: int = 25_000
    # a domain window changing more subject logs is split into several chained windows, so that its
    # transition proof (about 1.2 KB per subject) fits one Fabric transaction
    max_subjects_per_window: int = 4_000
    max_hashes_per_request: int = 1000
    max_ids_per_request: int = 250
    max_body_bytes: int = 256 * 1024
    max_wait_seconds: float = 60.0
    retention_days: float | None = None
    anchor_retry_max_seconds: float = 30.0
    # a chained target (Fabric) gets an empty window after this long without one, so silence is visible; 0: never
    empty_window_seconds: float = 60.0
    shutdown_grace_seconds: float = 30.0
    key_cache_seconds: float = 2.0
    body_timeout_seconds: float = 10.0
    # "sqlite" (embedded, one process) or redis://HOST:PORT/DB, redis+cluster://HOST:PORT (several instances)
    store: str = "sqlite"
    redis_unsafe_persistence: bool = False  # run on a Redis that could lose writes (see check_persistence)
    redis_wait_replicas: int = 0  # WAIT for this many replicas before acknowledging
    lease_seconds: float = 5.0  # the leader lease of a shared store: a dead leader is replaced within it
    memory_trim_seconds: float = 10.0  # how often freed heap goes back to the system (glibc); 0: never
    workers: int = 1  # processes serving one port on the embedded store (``serve --workers``); 1: this process
    fabric: FabricSettings | None = None  # only from a TOML file's [fabric] table
    # only from a TOML file's [domains] table: domain -> anchor targets ("local", "fabric:<channel>");
    # a domain not listed goes to the local ledger and, with Fabric, to the channel of its own name
    domain_targets: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def check(self) -> Settings:
        """Reject values the service cannot run with, naming the setting."""
        problems = []
        if re.fullmatch(r"[0-9.]+|.*:.*", self.host):
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                problems.append(f"host {self.host!r} is not a valid IP address")
        elif not re.fullmatch(
            r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
            self.host,
        ):
            problems.append(f"host {self.host!r} is not a valid host name")
        if not 0 < self.port < 65536 and self.port != 0:
            problems.append(f"port {self.port} is outside 0..65535")
        if not 0.01 <= self.window_seconds <= 3600:
            problems.append(f"window_seconds {self.window_seconds} must be between 0.01 and 3600")
        if not 1 <= self.max_leaves <= 2**32:
            problems.append(f"max_leaves {self.max_leaves} must be between 1 and 2^32")
        if not 1 <= self.max_subjects_per_window <= 100_000:
            problems.append(f"max_subjects_per_window {self.max_subjects_per_window} must be between 1 and 100000")
        if not 1 <= self.max_hashes_per_request <= 100_000:
            problems.append("max_hashes_per_request must be between 1 and 100000")
        if not 1 <= self.max_ids_per_request <= 10_000:
            problems.append("max_ids_per_request must be between 1 and 10000")
        if self.max_body_bytes < 32 * self.max_hashes_per_request:
            problems.append("max_body_bytes must hold max_hashes_per_request raw hashes (32 bytes each)")
        if self.retention_days is not None and self.retention_days <= 0:
            problems.append("retention_days must be positive (leave it unset to keep receipts forever)")
        if self.empty_window_seconds < 0:
            problems.append("empty_window_seconds must be 0 (never) or positive")
        if self.body_timeout_seconds <= 0:
            problems.append("body_timeout_seconds must be positive")
        if self.max_wait_seconds < 0 or self.anchor_retry_max_seconds <= 0 or self.shutdown_grace_seconds < 0:
            problems.append("max_wait_seconds, anchor_retry_max_seconds and shutdown_grace_seconds must be positive")
        if self.store != "sqlite":
            from .stores.redis import RedisTarget  # the redis package is needed only with a Redis store

            try:
                target = RedisTarget.parse(self.store)
                if target.cluster and self.redis_wait_replicas:
                    problems.append("redis_wait_replicas is not supported with a Redis Cluster store")
            except ConfigError as exc:
                problems.append(str(exc))
        if not 0 <= self.redis_wait_replicas <= 16:
            problems.append("redis_wait_replicas must be between 0 and 16")
        if not 0.5 <= self.lease_seconds <= 300:
            problems.append(f"lease_seconds {self.lease_seconds} must be between 0.5 and 300")
        if not 0 <= self.memory_trim_seconds <= 3600:
            problems.append(f"memory_trim_seconds {self.memory_trim_seconds} must be between 0 (never) and 3600")
        if not 1 <= self.workers <= MAX_WORKERS:
            problems.append(f"workers {self.workers} must be between 1 and {MAX_WORKERS}")
        elif self.workers > 1 and self.store != "sqlite":
            problems.append(
                "workers > 1 shares the embedded store; with a Redis store, run several instances instead"
                " (each its own 'receipt-service serve')"
            )
        channels = self.fabric.channels if self.fabric is not None else ()
        for domain, targets in self.domain_targets:
            for t in targets:
                if t != "local" and not (t.startswith("fabric:") and t[7:] in channels):
                    problems.append(
                        f"[domains] {domain}: target {t!r} is not 'local' or 'fabric:<channel>' of a configured"
                        f" channel ({', '.join(channels) or 'no [fabric] table'})"
                    )
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    def targets_for(self, domain: str) -> tuple[str, ...]:
        """The anchor targets of a domain's trees: the setting, else local plus the same-named channel."""
        for d, targets in self.domain_targets:
            if d == domain:
                return targets
        channels = self.fabric.channels if self.fabric is not None else ()
        return ("local", f"fabric:{domain}") if domain in channels else ("local",)


_FIELDS = {f.name: f for f in fields(Settings) if f.name not in ("fabric", "domain_targets")}


def parse_fabric(table: Any, source: str) -> FabricSettings:
    """The ``[fabric]`` table, every problem named."""
    where = f"{source} [fabric]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    known = {"msp_id", "cert", "key", "channels", "gateways", "chaincode", "concurrency", "chain_prefix", "chain_batch"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = sorted({"msp_id", "cert", "key", "channels", "gateways"} - set(table))
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    channels = table["channels"]
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise ConfigError(f"{where}: channels must be a non-empty list of channel names")
    bad = [c for c in channels if not CHANNEL_NAME.fullmatch(c)]
    if bad or len(set(channels)) != len(channels):
        raise ConfigError(f"{where}: channel names must be distinct and match [a-z][a-z0-9.-]*: {bad or channels}")
    gateways = table["gateways"]
    if not isinstance(gateways, list) or not gateways:
        raise ConfigError(f"{where}: gateways must be a non-empty array of tables ([[fabric.gateways]])")
    parsed = []
    for i, g in enumerate(gateways):
        if (
            not isinstance(g, dict)
            or not {"endpoint", "tls_root_cert"} <= set(g)
            or set(g)
            - {
                "endpoint",
                "tls_root_cert",
                "server_name",
            }
        ):
            raise ConfigError(f"{where}: gateways[{i}] needs endpoint and tls_root_cert (and optionally server_name)")
        parsed.append(GatewaySettings(str(g["endpoint"]), Path(str(g["tls_root_cert"])), g.get("server_name")))
    concurrency = table.get("concurrency", 32)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
        raise ConfigError(f"{where}: concurrency must be an integer from 1 to 1024")
    batch = table.get("chain_batch", 32)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 64:
        raise ConfigError(
            f"{where}: chain_batch must be an integer from 1 to 64 (windows per AppendWindows transaction)"
        )
    prefix = table.get("chain_prefix", "")
    if not isinstance(prefix, str) or (prefix and not CHAIN_PREFIX.fullmatch(prefix)):
        raise ConfigError(f"{where}: chain_prefix must be empty or 1-32 characters of a-z 0-9 - starting with a letter")
    return FabricSettings(
        msp_id=str(table["msp_id"]),
        cert=Path(str(table["cert"])),
        key=Path(str(table["key"])),
        channels=tuple(channels),
        gateways=tuple(parsed),
        chaincode=str(table.get("chaincode", "anchor")),
        concurrency=concurrency,
        chain_prefix=prefix,
        chain_batch=batch,
    )


def parse_domains(table: Any, source: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``[domains]`` table: each data-sharing domain -> a non-empty list of anchor targets."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [domains] must be a table of domain = [targets]")
    out = []
    for domain, targets in table.items():
        try:
            check_domain(domain)
        except ValueError as exc:
            raise ConfigError(f"{source}: [domains]: {exc}") from None
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"{source}: [domains] {domain} must be a non-empty list of target names")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{source}: [domains] {domain} lists a target twice")
        out.append((domain, tuple(targets)))
    return tuple(out)


def _coerce(name: str, value: Any, source: str) -> Any:
    default = getattr(Settings, name)
    try:
        if name == "data_dir":
            return Path(str(value)).expanduser()
        if name == "retention_days":
            if value in (None, "", "forever"):
                return None
            return float(value)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return str(value).lower() in ("true", "1", "yes", "on")
            raise ValueError(value)
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
        table = doc.get("service", {k: v for k, v in doc.items() if k not in ("fabric", "domains")})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {config_file}: [service] must be a table")
        settings = _apply(settings, table, str(config_file))
        if "fabric" in doc:
            settings = replace(settings, fabric=parse_fabric(doc["fabric"], str(config_file)))
        if "domains" in doc:
            settings = replace(settings, domain_targets=parse_domains(doc["domains"], str(config_file)))
    env = os.environ if environ is None else environ
    from_env = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    from_env.pop("config", None)
    settings = _apply(settings, from_env, "environment")
    if overrides:
        settings = _apply(settings, {k: v for k, v in overrides.items() if v is not None}, "command line")
    return settings.check()
