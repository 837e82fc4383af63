"""Running the service as a process: open the data directory, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from .errors import StoreStoppedError
from .fabric.evidence import BlockCache
from .fabric.gateway import Endpoint, GatewayClient
from .fabric.identity import Identity
from .ledger import load_or_create_key
from .metrics import MULTIPROC_ENV, use_worker_files
from .service import Service
from .stores.base import Store
from .stores.redis import RedisLink, RedisStore, RedisTarget, open_redis_stores
from .stores.sqlite import SQLiteStore, open_domain_stores
from .stores.workers import ServeLock

log = logging.getLogger("receipt_service")

DEFAULT_KEY_FILE = "default-api-key"


PUBLIC_KEY_FILE = "ledger-key.pub.json"


@dataclass(frozen=True)
class WorkerLink:
    """What a worker of ``serve --workers`` gets from its supervisor: its index, the port (each worker
    listens on it with ``SO_REUSEPORT``, so the kernel spreads connections evenly) and its end of a
    control socket (it says ``ready`` there; end of file there means the supervisor died)."""

    index: int
    port: int
    control_fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """From ``INDEX:PORT:CONTROL_FD``."""
        index, port, control_fd = (int(x) for x in text.split(":"))
        return cls(index, port, control_fd)

    def __str__(self) -> str:
        return f"{self.index}:{self.port}:{self.control_fd}"


def open_stores(settings: Settings, worker: int | None = None) -> tuple[Store, dict[str, Store], RedisLink | None]:
    """The v1 lane's store and one per domain: SQLite files in the data directory (``worker``: as that
    worker of ``serve --workers``), or a shared Redis (whose persistence settings are checked first)."""
    if settings.store == "sqlite":
        store = SQLiteStore(settings.data_dir, worker=worker)
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


def open_service(settings: Settings, worker: int | None = None) -> Service:
    """The store and anchor backends of a data directory, wired into a service (``worker``: as that
    worker of ``serve --workers``)."""
    data_dir = settings.data_dir
    private_dir(data_dir)
    store, domain_stores, link = open_stores(settings, worker)
    closers: list[Callable[[], Awaitable[None]]] = []
    shared = None
    if link is not None:
        closers.append(link.close)
        shared = RedisLedger(link.sync, load_or_create_key(data_dir))
    ledger = LocalLedgerBackend(data_dir, shared, lazy=worker is not None)  # the supervisor checked it
    backends: list[AnchorBackend] = [ledger]
    if worker is None:  # the supervisor of workers wrote it once, before they started
        write_public_key(data_dir, ledger)
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


def write_public_key(data_dir: Path, ledger: LocalLedgerBackend) -> None:
    """What auditors pin (``ledger-key.pem`` beside it is the private key); replaced whole, so a reader
    never sees half a file."""
    public = data_dir / PUBLIC_KEY_FILE
    tmp = public.with_name(f".{PUBLIC_KEY_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(ledger_key_doc(ledger), indent=2) + "\n")
    tmp.chmod(0o644)
    tmp.replace(public)


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
    settings: Settings,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    worker: WorkerLink | None = None,
) -> None:
    """Serve until SIGTERM, SIGINT (or ``stop``), then stop accepting, close and anchor the open window.

    As a worker of ``serve --workers`` (``worker``): on the supervisor's port beside the other workers
    (``SO_REUSEPORT``), without taking the data directory (the supervisor holds it), until SIGTERM or
    the supervisor's end."""
    held = None
    if worker is None and settings.store == "sqlite":  # one service per embedded data directory
        private_dir(settings.data_dir)
        held = ServeLock(settings.data_dir)
        held.take()
    try:
        await _serve(settings, ready, stop or asyncio.Event(), worker)
    finally:
        if held is not None:
            held.release()


async def _serve(
    settings: Settings, ready: Callable[[int], None] | None, stop: asyncio.Event, worker: WorkerLink | None
) -> None:
    if worker is not None and os.environ.get(MULTIPROC_ENV):  # before open_service makes the metrics
        use_worker_files(worker.index)
    service = open_service(settings, None if worker is None else worker.index)
    runner = web.AppRunner(
        init_app(service), handle_signals=False, access_log=None, max_line_size=MAX_LINE, max_field_size=MAX_LINE
    )
    await runner.setup()
    if worker is None:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    else:
        site = web.TCPSite(runner, settings.host, worker.port, backlog=1024, reuse_port=True)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    ledger = service.ledger()
    loop = asyncio.get_running_loop()
    if worker is None:
        ensure_default_key(service.store, settings.data_dir)  # only once the service could bind its address
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
    else:
        log.info("worker %d ready (pid %d, clock sequence %d)", worker.index, os.getpid(), service.store.clock_seq)
        control = socket.socket(fileno=worker.control_fd)
        try:
            control.sendall(b"ready\n")
        except OSError:  # the supervisor died while this worker started: stop (draining) at once
            log.warning("the supervisor is gone: stopping this worker")
            stop.set()
        else:
            control.setblocking(False)
            loop.add_reader(control, lambda: _supervisor_gone(control, stop))
    if ready is not None:
        ready(port)
    signals = (signal.SIGTERM, signal.SIGINT) if worker is None else (signal.SIGTERM,)  # workers: SIGINT goes
    for sig in signals:  # to the whole terminal group; the supervisor stops its workers in order instead
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_watch_stores([lane.store for lane in service.lanes.all], stop))
    try:
        await stop.wait()
        log.info("stopping: no new hashes; closing and anchoring the open window")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if worker is not None:
            loop.remove_reader(worker.control_fd)
        watch.cancel()
        await runner.cleanup()
    broken = watch.result() if watch.done() and not watch.cancelled() else None
    if broken is not None:  # exit with an error: a supervisor (serve --workers, systemd) starts it again
        raise StoreStoppedError(f"stopped: {broken}")
    log.info("stopped")


STORE_WATCH_SECONDS = 1.0


async def _watch_stores(stores: list[Store], stop: asyncio.Event) -> str | None:
    """Set ``stop`` once a store takes no more writes, which only a restart brings back; why, or None.

    Such a service would answer every submission 503 until someone restarted it; stopping (the drain
    ends at once for that store) lets whatever supervises the process start it again."""
    while not stop.is_set():
        for store in stores:
            why = store.stopped()
            if why is not None:
                log.critical("stopping: a store takes no more writes (%s)", why)
                stop.set()
                return why
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STORE_WATCH_SECONDS)
    return None


def _supervisor_gone(control: socket.socket, stop: asyncio.Event) -> None:
    """The control socket is readable: the supervisor closed it (it died); a worker then stops too."""
    try:
        data = control.recv(64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        log.warning("the supervisor is gone: stopping this worker")
        asyncio.get_running_loop().remove_reader(control)
        stop.set()
