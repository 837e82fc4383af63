"""A real service (SQLite or Redis store, local ledger) behind aiohttp's test client, plus OpenAPI checks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from receipt_service.anchors import LocalLedgerBackend
from receipt_service.anchors.redis_ledger import RedisLedger
from receipt_service.app import MAX_LINE, init_app
from receipt_service.auth import make_key
from receipt_service.config import Settings
from receipt_service.domains import DOMAINS, Role
from receipt_service.ledger import load_or_create_key
from receipt_service.service import Service
from receipt_service.stores.base import Store
from receipt_service.stores.redis import RedisLink, RedisTarget, open_redis_stores
from receipt_service.stores.sqlite import SQLiteStore, open_domain_stores

from .parties import SUBJECT, Party, event
from .redisproc import RedisCluster, RedisServer

OPENAPI: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "receipt_service" / "openapi.json").read_text()
)

KEYS: dict[str, tuple[str, str, Role | None]] = {
    "clinic": ("clinic-a", "submit,read", None),
    "insurer": ("insurer-b", "submit,read", None),
    "reader": ("clinic-a", "read", None),
    "writer": ("clinic-a", "submit", None),
    # Table I roles
    "app": ("wearco", "submit,read", "owner-app"),
    "app2": ("otherapp", "submit,read", "owner-app"),
    "provider": ("clinic-x", "submit,read", "provider"),
    "payer": ("insure-y", "submit,read", "insurer"),
    "auditor": ("audit-z", "read", "auditor"),
}


def openapi_validate(instance: Any, schema_name: str) -> None:
    """Validate a response body against a schema of the shipped OpenAPI document."""
    schema = dict(OPENAPI)
    schema["$ref"] = f"#/components/schemas/{schema_name}"
    Draft202012Validator(schema).validate(instance)


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    service: Service
    tokens: dict[str, str]
    data_dir: Path

    def auth(self, who: str = "clinic") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def submit(self, hashes: list[str], who: str = "clinic") -> list[dict[str, str]]:
        resp = await self.client.post("/hashes", json={"hashes": hashes}, headers=self.auth(who))
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        items: list[dict[str, str]] = body["hashes"]
        return items


Factory = Callable[..., Awaitable[Env]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Service tests run on the SQLite store and on the Redis store (``sqlite_only``: tests of SQLite files)."""
    if "store_kind" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("store_kind", ["sqlite"] if only else ["sqlite", "redis"])


@pytest.fixture
async def make_env(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    store_kind: str,
    request: pytest.FixtureRequest,
) -> Factory:
    async def make(**overrides: Any) -> Env:
        settings = replace(Settings(data_dir=tmp_path, window_seconds=0.05), **overrides).check()
        store: Store
        lanes: dict[str, Store]
        backend: LocalLedgerBackend
        closers: list[Callable[[], Awaitable[None]]] = []
        if store_kind == "redis":
            url = request.getfixturevalue("redis_url")
            settings = replace(settings, store=url)
            link = RedisLink(RedisTarget.parse(url))
            closers.append(link.close)  # at the app's cleanup, after its windows drained
            store, redis_lanes = open_redis_stores(link, DOMAINS, lease_seconds=settings.lease_seconds)
            lanes = dict(redis_lanes)
            backend = LocalLedgerBackend(tmp_path, RedisLedger(link.sync, load_or_create_key(tmp_path)))
        else:
            store = SQLiteStore(tmp_path)
            lanes = dict(open_domain_stores(tmp_path, store, DOMAINS))
            backend = LocalLedgerBackend(tmp_path)
        tokens = {}
        for name, (tenant, scopes, role) in KEYS.items():
            key = make_key(tenant, frozenset(scopes.split(",")), role)
            store.create_api_key(key.record)
            tokens[name] = key.token
        service = Service(settings, store, [backend], domain_stores=lanes, closers=closers)
        server = TestServer(init_app(service))
        await server.start_server(
            max_line_size=MAX_LINE, max_field_size=MAX_LINE
        )  # the production limits (TestServer drops init kwargs)
        client = await aiohttp_client(server)
        return Env(client, service, tokens, tmp_path)

    return make


@pytest.fixture
async def env(make_env: Factory) -> Env:
    return await make_env()


class World:
    """The paper's parties on one service: the patient's app, a clinic and an insurer."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.owner = Party()
        self.clinic = Party(ec_key=True)
        self.insurer = Party()

    async def setup(self) -> None:
        assert (await self.post("/signing-keys", {"jwk": self.owner.jwk, "subject": SUBJECT}, "app"))[0] == 201
        assert (await self.post("/signing-keys", {"jwk": self.clinic.jwk}, "provider"))[0] == 201
        assert (await self.post("/signing-keys", {"jwk": self.insurer.jwk}, "payer"))[0] == 201

    async def post(self, path: str, body: Any, who: str) -> tuple[int, Any]:
        resp = await self.env.client.post(path, json=body, headers=self.env.auth(who))
        return resp.status, await resp.json()

    async def get(self, path: str, who: str) -> tuple[int, Any]:
        resp = await self.env.client.get(path, headers=self.env.auth(who))
        return resp.status, await resp.json(content_type=None)

    async def grant(self, receiver: str, domain: str, **kw: Any) -> tuple[int, Any]:
        return await self.post(
            "/access-events", self.owner.sign(event("grant", SUBJECT, receiver, domain, **kw)), "app"
        )

    async def revoke(self, receiver: str, domain: str) -> tuple[int, Any]:
        return await self.post("/access-events", self.owner.sign(event("revoke", SUBJECT, receiver, domain)), "app")

    async def read(self, who: str, domain: str) -> tuple[int, Any]:
        return await self.get(f"/subjects/{SUBJECT}/receipts?domain={domain}", who)


@pytest.fixture
async def world(env: Env) -> World:
    w = World(env)
    await w.setup()
    return w


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server (AOF, fsync always) for the session; tests flush it before use."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local three-master Redis Cluster for the session; tests flush it before use."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The session's cluster, emptied (every master)."""
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    return redis_cluster.url
