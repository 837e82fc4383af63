"""Running the service as a process: open the data directory, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from .anchors import AnchorBackend, LocalLedgerBackend
from .anchors.fabric import FabricChannelBackend
from .anchors.redis_ledger import RedisLedger
from .app import MAX_LINE, init_app, ledger_key_doc
from .auth import make_key
from .config import FabricSettings, Settings
from .domains import DOMAINS
from .fabric.evidence import BlockCache
from .fabric.gateway import Endpoint, GatewayClient
from .fabric.identity import Identity
from .ledger import load_or_create_key
from .service import Service
from .stores.base import Store
from .stores.redis import RedisLink, RedisStore, RedisTarget, open_redis_stores
from .stores.sqlite import SQLiteStore, open_domain_stores

log = logging.getLogger("receipt_service")

DEFAULT_KEY_FILE = "default-api-key"


PUBLIC_KEY_FILE = "ledger-key.pub.json"


def open_stores(settings: Settings) -> tuple[Store, dict[str, Store], RedisLink | None]:
    """The v1 lane's store and one per domain: SQLite files in the data directory, or a shared Redis
    (whose persistence settings are checked first)."""
    if settings.store == "sqlite":
        store = SQLiteStore(settings.data_dir)
        return store, dict(open_domain_stores(settings.data_dir, store, DOMAINS)), None
    link = RedisLink(RedisTarget.parse(settings.store), wait_replicas=settings.redis_wait_replicas)
    try:
        link.check_persistence(settings.redis_unsafe_persistence)
        main, lanes = open_redis_stores(link, DOMAINS, lease_seconds=settings.lease_seconds)
    except BaseException:
        link.sync.close()
        raise
    return main, dict(lanes), link


def _host(url: str) -> str:
    """A store URL's host and port without its password (for logs)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def open_key_store(settings: Settings) -> tuple[Store, Callable[[], None]]:
    """The store that holds API keys (for ``receipt-service keys``), and how to close it."""
    if settings.store == "sqlite":
        store = SQLiteStore(settings.data_dir)
        return store, store.close_sync
    link = RedisLink(RedisTarget.parse(settings.store))
    return RedisStore(link, take_clock=False), link.sync.close


def open_service(settings: Settings) -> Service:
    """The store and anchor backends of a data directory, wired into a service."""
    data_dir = settings.data_dir
    private_dir(data_dir)
    store, domain_stores, link = open_stores(settings)
    closers: list[Callable[[], Awaitable[None]]] = []
    shared = None
    if link is not None:
        closers.append(link.close)
        shared = RedisLedger(link.sync, load_or_create_key(data_dir))
    ledger = LocalLedgerBackend(data_dir, shared)
    backends: list[AnchorBackend] = [ledger]
    public = data_dir / PUBLIC_KEY_FILE  # what auditors pin; ledger-key.pem beside it is the private key
    public.write_text(json.dumps(ledger_key_doc(ledger), indent=2) + "\n")
    public.chmod(0o644)
    evidence = None
    if settings.fabric is not None:
        client = fabric_client(settings.fabric)
        closers.append(client.close)
        evidence = BlockCache(store, client, settings.fabric.channels)
        backends += [
            FabricChannelBackend(
                client,
                ch,
                settings.fabric.chaincode,
                settings.fabric.concurrency,
                evidence,
                chain_prefix=settings.fabric.chain_prefix,
                max_batch=settings.fabric.chain_batch,
            )
            for ch in settings.fabric.channels
        ]
    return Service(settings, store, backends, closers=closers, evidence=evidence, domain_stores=domain_stores)


def fabric_client(fabric: FabricSettings) -> GatewayClient:
    """A Gateway client for the ``[fabric]`` settings (identity and TLS roots are read and checked now)."""
    identity = Identity.from_files(fabric.msp_id, fabric.cert, fabric.key)
    endpoints = [Endpoint.from_files(g.endpoint, g.tls_root_cert, g.server_name) for g in fabric.gateways]
    return GatewayClient(identity, endpoints)


def private_dir(data_dir: Path) -> None:
    """The data directory and what the service writes in it are readable by the service's user only."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for name in ("receipts.sqlite3", "receipts.sqlite3-wal", "receipts.sqlite3-shm", "ledger.jsonl"):
        path = data_dir / name
        if path.exists():
            path.chmod(0o600)


def ensure_default_key(store: Store, data_dir: Path) -> Path | None:
    """On first start (no keys at all), make a key for tenant ``default`` and keep it in a 0600 file."""
    if store.list_api_keys():
        return None
    key = make_key("default", frozenset({"submit", "read"}))
    path = data_dir / DEFAULT_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.token + "\n")
    store.create_api_key(key.record)
    log.info("no API keys yet: created one for tenant 'default' in %s", path)
    return path


async def serve(
    settings: Settings, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM, SIGINT (or ``stop``), then stop accepting, close and anchor the open window."""
    service = open_service(settings)
    runner = web.AppRunner(
        init_app(service), handle_signals=False, access_log=None, max_line_size=MAX_LINE, max_field_size=MAX_LINE
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    ensure_default_key(service.store, settings.data_dir)  # only once the service could bind its address
    ledger = service.ledger()
    log.info(
        "serving on http://%s:%d (data %s, store %s, instance %s, window %.3gs, ledger key id %s)",
        settings.host,
        port,
        settings.data_dir,
        "sqlite"
        if settings.store == "sqlite"
        else urlsplit(settings.store)._replace(netloc=_host(settings.store)).geturl(),
        service.store.token if isinstance(service.store, RedisStore) else service.store.instance_id,
        settings.window_seconds,
        ledger.ledger.key_id if ledger else "-",
    )
    if ready is not None:
        ready(port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping: no new hashes; closing and anchoring the open window")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    log.info("stopped")
