"""The connections every lane shares (``RedisLink``), where they go (``RedisTarget``), and Redis errors as
the service's."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster as SyncCluster
from redis.exceptions import RedisError, ResponseError

from ...errors import ConfigError, StoreError
from .scripts import SCRIPTS

log = logging.getLogger("receipt_service.store")


@dataclass(frozen=True)
class RedisTarget:
    """Where the shared store lives: ``redis://HOST:PORT/DB`` or ``redis+cluster://HOST:PORT``."""

    url: str
    cluster: bool

    @classmethod
    def parse(cls, text: str) -> RedisTarget:
        """Check a store URL (ConfigError naming what is wrong)."""
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster") or not parts.hostname:
            raise ConfigError(
                f"store {text!r} is not 'sqlite', redis://HOST:PORT/DB or redis+cluster://HOST:PORT (a cluster node)"
            )
        cluster = parts.scheme.endswith("+cluster")
        if cluster and parts.path.strip("/") not in ("", "0"):
            raise ConfigError(f"store {text!r}: a Redis Cluster has only database 0")
        try:
            port = parts.port  # urllib raises on a port that is not a number from 0 to 65535
        except ValueError:
            port = 0
        if port == 0:
            raise ConfigError(f"store {text!r}: the port must be a number from 1 to 65535")
        return cls(text.replace("+cluster", "", 1) if cluster else text, cluster)


class ScriptRefusedError(StoreError):
    """A script refused a write (a lost lease, taken ticks, a conflict); ``reply`` is its error text."""

    def __init__(self, reply: str) -> None:
        super().__init__(f"Redis refused the write: {reply}")
        self.reply = reply


class RedisLink:
    """The connections every lane shares: async for requests, sync for administration and start-up."""

    def __init__(
        self, target: RedisTarget, *, wait_replicas: int = 0, wait_timeout_ms: int = 1000, timeout_seconds: float = 10.0
    ) -> None:
        self.target = target
        self.token = secrets.token_hex(4)  # this process: the owner named in lease values
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        if target.cluster and wait_replicas:
            raise ConfigError("redis_wait_replicas is not supported on a Redis Cluster (WAIT has no key to route by)")
        self.client: Any
        self.sync: Any
        # a Redis that stops answering fails requests (503) after this long instead of holding them
        read, connect = timeout_seconds, min(5.0, timeout_seconds)
        if target.cluster:
            p = urlsplit(target.url)
            host, port, password = p.hostname, p.port or 6379, p.password
            self.client = AsyncCluster(
                host=host, port=port, password=password, socket_timeout=read, socket_connect_timeout=connect
            )
            self.sync = SyncCluster(
                host=host, port=port, password=password, socket_timeout=read, socket_connect_timeout=connect
            )
        else:
            self.client = aredis.Redis.from_url(target.url, socket_timeout=read, socket_connect_timeout=connect)
            self.sync = redis.Redis.from_url(target.url, socket_timeout=read, socket_connect_timeout=connect)
        self.scripts = {name: self.client.register_script(body) for name, body in SCRIPTS.items()}
        self.sync_scripts = {name: self.sync.register_script(body) for name, body in SCRIPTS.items()}

    def masters(self) -> list[Any]:
        """A sync client for every master (the one server, or each cluster primary)."""
        if not self.target.cluster:
            return [self.sync]
        return [self.sync.get_redis_connection(node) for node in self.sync.get_primaries()]

    def check_persistence(self, allow_unsafe: bool) -> None:
        """Refuse a server that could lose acknowledged writes (unless the operator opted out).

        ``aof-load-truncated yes`` (Redis's default) is refused too: Redis 7.0 loads an AOF whose
        tail tore inside a script's MULTI/EXEC block but keeps the half block in the file, so the
        writes acknowledged after that restart are lost at the next one."""
        for node in self.masters():
            where = "{host}:{port}".format(**node.connection_pool.connection_kwargs)
            try:
                conf = {**node.config_get("append*"), **node.config_get("aof-load-truncated")}
            except RedisError as exc:
                if allow_unsafe:
                    log.warning(
                        "Redis %s: persistence settings unreadable (%s); running anyway as configured", where, exc
                    )
                    continue
                raise StoreError(
                    f"Redis {where}: cannot read its persistence settings ({exc}); the service needs appendonly"
                    " yes, appendfsync always and aof-load-truncated no (set redis_unsafe_persistence = true to"
                    " run anyway)"
                ) from None
            wrong = [
                f"{k} is {conf.get(k)!r}, needs {v!r}"
                for k, v in (("appendonly", "yes"), ("appendfsync", "always"), ("aof-load-truncated", "no"))
                if conf.get(k) != v
            ]
            if wrong and not allow_unsafe:
                raise StoreError(
                    f"Redis {where} could lose acknowledged hashes: {'; '.join(wrong)}. Set them (CONFIG SET"
                    " appendonly yes; CONFIG SET appendfsync always; CONFIG SET aof-load-truncated no; and in"
                    " redis.conf; after a crash that leaves the AOF torn, Redis then stops at start and"
                    " redis-check-aof --fix on the AOF manifest repairs it), or set redis_unsafe_persistence ="
                    " true to accept losing writes on a crash"
                )
            if wrong:
                log.warning("Redis %s: %s; acknowledged hashes can be lost on a crash", where, "; ".join(wrong))

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any], *, wait: bool = False) -> Any:
        """Run a script (then WAIT for replicas when configured and asked); Redis errors become StoreError."""
        try:
            if wait and self.wait_replicas:
                async with self.client.pipeline(transaction=False) as pipe:
                    await self.scripts[name](keys=keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                    result, acked = await pipe.execute()
                if int(acked) < self.wait_replicas:
                    raise StoreError(
                        f"only {acked} of {self.wait_replicas} Redis replicas confirmed the write in time; retry"
                    )
                return result
            return await self.scripts[name](keys=keys, args=args)
        except ResponseError as exc:
            raise ScriptRefusedError(str(exc)) from None
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from None

    async def close(self) -> None:
        """Close both connection pools."""
        await self.client.aclose()
        self.sync.close()


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Redis failures (connection lost, timeout, refused command) as ``StoreError``: a 503 naming Redis."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"Redis: {exc}") from None
