"""The shared store: Redis (or a Redis Cluster), so several service instances serve one data set.

Every key of a lane carries the hash tag ``{hr:<lane>}``: a lane lives in one cluster slot, and each
multi-key write is one Lua script, applied, replicated and appended to the AOF as a whole. The server
must run with ``appendonly yes`` and ``appendfsync always`` (checked at start on every master), so a
reply to a write means the write is on disk; ``redis_wait_replicas`` adds a ``WAIT`` for replicas.

Several instances share a lane:

- each holds its own clock sequence under a lease, so their proof ids never collide; the add-batch
  script also refuses ticks at or below the clock's last ones, so even two instances on one clock
  (one paused past its lease) cannot issue the same id;
- one holds the lane's leader lease, whose value carries a fencing token bumped on every takeover;
  the commit script compares it, so a leader paused past its lease cannot commit a second tree set;
- commits and anchors are published on the lane's channel, which wakes long polls on every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import struct
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster as SyncCluster
from redis.exceptions import RedisError, ResponseError

from receipt_verifier.history import frontier_root

from ..errors import ConfigError, ConflictError, CorruptRecordError, LeaseLostError, StoreError, TicksTakenError
from ..ids import ceil_us
from .base import (
    AnchorRecord,
    ApiKeyRecord,
    Batch,
    EventRecord,
    SigningKeyRecord,
    StoredBatch,
    StoreStats,
    SubjectHead,
    SubmissionRecord,
    TreeRecord,
    insertion_order,
    seq_hashes,
    tree_checksum,
)

log = logging.getLogger("receipt_service.store")

V1_LANE = "v1"  # the lane of keys without a role
REGISTRY = "{hr}:clock-registry"  # clock sequence -> lane, across lanes (proof ids name their lane)
_BODY = struct.Struct(">QIHH")  # first ticks, count, tenant length, subject length
_PAGE = 512


# ---------------------------------------------------------------------- scripts

_ADD_BATCH = """
local floor = redis.call('HGET', KEYS[1], 'floor')
if floor and ARGV[3] < floor then return redis.error_reply('FLOOR ' .. floor) end
local prev = redis.call('ZREVRANGEBYLEX', KEYS[4], '(' .. ARGV[8], '[' .. ARGV[1], 'LIMIT', 0, 1)[1]
if prev and string.sub(prev, 22, 37) >= ARGV[3] then
  return redis.error_reply('TICKS ' .. (redis.call('HGET', KEYS[5], ARGV[1]) or string.sub(prev, 22, 37)))
end
local n = tonumber(ARGV[5])
local first = redis.call('HINCRBY', KEYS[1], 'next_seq', n) - n + 1
local logf = 0
if ARGV[7] ~= '' then
  logf = redis.call('HINCRBY', KEYS[6], ARGV[7], n) - n
  for i = 9, #ARGV, 250 do  -- the subject's index: record hash -> its newest seq (retention reads it)
    local kv = {}
    for j = i, math.min(i + 249, #ARGV) do
      kv[#kv + 1] = ARGV[j]
      kv[#kv + 1] = string.format('%d', first + j - 9)
    end
    redis.call('HSET', KEYS[7], unpack(kv))
  end
  redis.call('ZADD', KEYS[8], logf, first)
end
local f = string.format('%d', first)
redis.call('HSET', KEYS[2], f, f .. ',' .. string.format('%d', logf) .. ',' .. ARGV[6])
redis.call('ZADD', KEYS[3], first, f .. ':' .. ARGV[5] .. ':' .. ARGV[2])
redis.call('ZADD', KEYS[4], 0, ARGV[2] .. ':' .. f)
local top = redis.call('HGET', KEYS[5], ARGV[1])
if not top or top < ARGV[4] then redis.call('HSET', KEYS[5], ARGV[1], ARGV[4]) end
return {first, logf}
"""

_SEAL = """
local top = ARGV[1]
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do if v > top then top = v end end
local floor = redis.call('HGET', KEYS[1], 'floor')
if floor and floor > top then top = floor end
if top > ARGV[1] then return {'HIGHER', top} end
redis.call('HSET', KEYS[1], 'floor', ARGV[1])
return {'SEALED', redis.call('HGET', KEYS[1], 'next_seq')}
"""

_COMMIT_WINDOW = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('LEASE this instance no longer leads the lane; another instance took over')
end
local mark = redis.call('HGET', KEYS[1], 'watermark')
if tonumber(mark) + 1 ~= tonumber(ARGV[2]) then return redis.error_reply('WATERMARK ' .. mark) end
local nt, ng = tonumber(ARGV[4]), tonumber(ARGV[5])
local tp = 8 + 3 * nt
for i = 0, nt - 1 do
  local key, first, doc = ARGV[8 + 3 * i], ARGV[9 + 3 * i], ARGV[10 + 3 * i]
  redis.call('HSET', KEYS[3], key, doc)
  redis.call('ZADD', KEYS[4], first, key)
  for j = 0, ng - 1 do
    redis.call('HSET', KEYS[7 + i], ARGV[tp + j], ARGV[6])
    redis.call('ZADD', KEYS[5], first, key .. '/' .. ARGV[tp + j])
  end
end
local hp = tp + ng
for h = 0, (#ARGV - hp + 1) / 2 - 1 do
  redis.call('HSET', KEYS[6], ARGV[hp + 2 * h], ARGV[hp + 2 * h + 1])
  redis.call('ZADD', KEYS[7 + nt + h], ARGV[3], ARGV[3] .. ':' .. ARGV[hp + 2 * h + 1])
end
redis.call('HSET', KEYS[1], 'watermark', ARGV[3])
redis.call('PUBLISH', ARGV[7], 'c ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
"""

_RECORD_ANCHOR = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local job = cjson.decode(doc)
job['attempts'] = job['attempts'] + 1
if ARGV[2] == '' then
  if job['anchor'] == cjson.null then job['last_error'] = ARGV[3] end
elseif job['anchor'] == cjson.null then
  job['anchor'] = ARGV[2]
  job['done_ns'] = ARGV[3]
  job['last_error'] = cjson.null
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(job))
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('PUBLISH', ARGV[5], 'a ' .. ARGV[6] .. ' ' .. ARGV[7])
end
return 1
"""

_LEAD = """
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif cur then
  cur = false
else
  cur = ARGV[1] .. ':' .. string.format('%d', redis.call('HINCRBY', KEYS[2], 'fence', 1))
  redis.call('SET', KEYS[1], cur, 'PX', ARGV[2])
end
local clock = redis.call('GET', KEYS[3])
local ours = 0
if clock == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  ours = 1
elseif not clock then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
  ours = 1
end
return {cur, ours}
"""

_RESIGN = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

_ADD_EVENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], 'events', 1)
redis.call('HSET', KEYS[1], ARGV[1], n)
redis.call('HSET', KEYS[2], n, ARGV[2])
redis.call('RPUSH', KEYS[4], n)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[5], ARGV[3], n) end
return n
"""

_ADD_KEY = """
if ARGV[1] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if cur and cjson.decode(cur)['tenant'] ~= ARGV[2] then
    return redis.error_reply('CONFLICT subject ' .. ARGV[1] .. ' is registered by another app; choose another pseudonym')
  end
end
local k = redis.call('HGET', KEYS[2], ARGV[4])
if k and cjson.decode(k)['party'] ~= ARGV[5] then
  return redis.error_reply('CONFLICT key ' .. ARGV[4] .. ' is already registered for another party')
end
if ARGV[1] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[6])
return 1
"""

_REVOKE = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local k = cjson.decode(doc)
if k['revoked'] ~= cjson.null then return 0 end
k['revoked'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(k))
return 1
"""

_PURGE = """
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return redis.error_reply('LEASE this instance no longer leads') end
if redis.call('HGET', KEYS[1], 'purged_upto') ~= ARGV[2] then return redis.error_reply('PURGE raced') end
local nt = tonumber(ARGV[4])
for i = 0, nt - 1 do
  redis.call('HDEL', KEYS[2], ARGV[5 + i])
  redis.call('ZREM', KEYS[3], ARGV[5 + i])
  redis.call('DEL', KEYS[8 + i])
end
local a = 5 + nt
for i = 1, tonumber(ARGV[a]) do
  redis.call('HDEL', KEYS[4], ARGV[a + 1])
  redis.call('ZREM', KEYS[5], ARGV[a + 2])
  redis.call('ZREM', KEYS[6], ARGV[a + 3])
  a = a + 3
end
a = a + 1
local upto = tonumber(ARGV[3])
local k = 8 + nt
while a <= #ARGV do  -- per subject: its record hashes in the purged range, then its fully purged batches
  for i = a + 1, a + tonumber(ARGV[a]) do
    local seq = redis.call('HGET', KEYS[k], ARGV[i])
    if seq and tonumber(seq) <= upto then redis.call('HDEL', KEYS[k], ARGV[i]) end
  end
  a = a + tonumber(ARGV[a]) + 1
  for i = a + 1, a + tonumber(ARGV[a]) do redis.call('ZREM', KEYS[k + 1], ARGV[i]) end
  a = a + tonumber(ARGV[a]) + 1
  k = k + 2
end
redis.call('HSET', KEYS[1], 'purged_upto', ARGV[3])
return 1
"""

_INDEX_SUBJECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  local seq = redis.call('HGET', KEYS[2], ARGV[i])
  if not seq or tonumber(seq) < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
redis.call('DEL', KEYS[1])
return 1
"""


# ---------------------------------------------------------------------- connection


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
        self.scripts = {name: self.client.register_script(body) for name, body in _SCRIPTS.items()}
        self.sync_scripts = {name: self.sync.register_script(body) for name, body in _SCRIPTS.items()}

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


_SCRIPTS = {
    "add_batch": _ADD_BATCH,
    "commit_window": _COMMIT_WINDOW,
    "seal": _SEAL,
    "record_anchor": _RECORD_ANCHOR,
    "lead": _LEAD,
    "resign": _RESIGN,
    "add_event": _ADD_EVENT,
    "add_key": _ADD_KEY,
    "revoke": _REVOKE,
    "purge": _PURGE,
    "index_subject": _INDEX_SUBJECT,
}


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """Redis failures (connection lost, timeout, refused command) as ``StoreError``: a 503 naming Redis."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"Redis: {exc}") from None


# ---------------------------------------------------------------------- encodings


def _hex16(n: int) -> str:
    return f"{n:016x}"


def _body(b: Batch) -> bytes:
    tenant, subject = b.tenant.encode(), b.subject.encode()
    raw = _BODY.pack(b.first_ticks, b.count, len(tenant), len(subject)) + tenant + subject
    raw += b.proof_ids + b.hashes + b.nonces
    return raw + hashlib.blake2b(raw, digest_size=16).digest()


def _stored(value: bytes) -> StoredBatch:
    """A batch value as the add-batch script wrote it: ``first_seq,log_first,`` then the checked body."""
    try:
        seq_text, log_text, raw = value.split(b",", 2)
        first_seq, log_first = int(seq_text), int(log_text)
        body, checksum = raw[:-16], raw[-16:]
        if hashlib.blake2b(body, digest_size=16).digest() != checksum:
            raise ValueError("checksum")
        ticks, count, lt, ls = _BODY.unpack_from(body)
        o = _BODY.size
        tenant, subject = body[o : o + lt].decode(), body[o + lt : o + lt + ls].decode()
        o += lt + ls
        cols = body[o:]
        if len(cols) != 64 * count:
            raise ValueError("length")
        ids, hashes, nonces = cols[: 16 * count], cols[16 * count : 48 * count], cols[48 * count :]
        return StoredBatch(first_seq, Batch(tenant, ticks, ids, hashes, nonces, subject, log_first))
    except (ValueError, struct.error, UnicodeDecodeError):
        raise CorruptRecordError("a stored batch of submissions failed its integrity check; it is not served") from None


def _tree_doc(t: TreeRecord, closed_ns: int) -> str:
    return json.dumps(
        {
            "window_id": t.window_id,
            "tree_index": t.tree_index,
            "first_seq": t.first_seq,
            "last_seq": t.last_seq,
            "root": t.root.hex(),
            "window_start": t.window_start,
            "window_end": t.window_end,
            "closed_ns": str(closed_ns),
            "heads_root": None if t.heads_root is None else t.heads_root.hex(),
            "heads_size": t.heads_size,
            "checksum": tree_checksum(t).hex(),
        },
        separators=(",", ":"),
    )


def _tree(doc: bytes | str) -> tuple[TreeRecord, int]:
    try:
        d = json.loads(doc)
        tree = TreeRecord(
            d["window_id"],
            d["tree_index"],
            d["first_seq"],
            d["last_seq"],
            bytes.fromhex(d["root"]),
            d["window_start"],
            d["window_end"],
            None if d["heads_root"] is None else bytes.fromhex(d["heads_root"]),
            d["heads_size"],
        )
        ok = len(tree.root) == 32 and bytes.fromhex(d["checksum"]) == tree_checksum(tree)
        closed = int(d["closed_ns"])
    except (ValueError, KeyError, TypeError):
        ok, closed = False, 0
    if not ok:
        raise CorruptRecordError("a stored tree failed its integrity check; it is not served")
    return tree, closed


def _head_blob(h: SubjectHead) -> bytes:
    return h.size.to_bytes(8, "big") + h.root + b"".join(h.frontier)


def _head(subject: str, blob: bytes) -> SubjectHead:
    size, root, rest = int.from_bytes(blob[:8], "big"), blob[8:40], blob[40:]
    nodes = tuple(rest[i : i + 32] for i in range(0, len(rest), 32))
    if len(root) != 32 or len(rest) % 32 or len(nodes) != size.bit_count() or frontier_root(nodes) != root:
        raise CorruptRecordError(f"the stored head of {subject}'s log fails its check")
    return SubjectHead(subject, size, root, nodes)


def _tree_key(window_id: str, tree_index: int) -> str:
    return f"{window_id}/{tree_index}"


def _key_doc(k: ApiKeyRecord) -> str:
    return json.dumps(
        {
            "key_id": k.key_id,
            "tenant": k.tenant,
            "secret_hash": k.secret_hash.hex(),
            "scopes": sorted(k.scopes),
            "created": k.created,
            "revoked": k.revoked,
            "role": k.role,
        }
    )


def _api_key(doc: bytes) -> ApiKeyRecord:
    d = json.loads(doc)
    scopes = d["scopes"] if isinstance(d["scopes"], list) else []  # cjson writes an empty list as {}
    return ApiKeyRecord(
        d["key_id"],
        d["tenant"],
        bytes.fromhex(d["secret_hash"]),
        frozenset(scopes),
        d["created"],
        d["revoked"],
        d["role"],
    )


_EVENT_FIELDS = (
    "replay_id",
    "event_hash",
    "owner",
    "receiver",
    "domain",
    "action",
    "time",
    "expiry",
    "doc",
    "proof_id",
    "tenant",
)


# ---------------------------------------------------------------------- the store


class RedisStore:
    """``Store`` for one lane on a shared Redis; the first lane's store also holds keys, subjects and events."""

    def __init__(
        self,
        link: RedisLink,
        *,
        domain: str | None = None,
        lease_seconds: float = 5.0,
        clock_lease_seconds: float = 30.0,
        avoid_clock_seqs: Collection[int] = (),
        take_clock: bool = True,
    ) -> None:
        self.link = link
        self.domain = domain
        self.lane = domain or V1_LANE
        self.token = link.token
        self.lease_ms = int(lease_seconds * 1000)
        self.lease_seconds: float | None = self.lease_ms / 1000
        self.clock_lease_ms = int(clock_lease_seconds * 1000)
        self.channel = self.k("changes")
        self._lease: str | None = None
        self._clocks: set[int] = set()
        self._avoid = set(avoid_clock_seqs)
        s = link.sync
        try:
            meta = self.k("meta")
            for field, value in (("next_seq", 0), ("watermark", 0), ("purged_upto", 0), ("events", 0), ("fence", 0)):
                s.hsetnx(meta, field, value)
            s.hsetnx(meta, "domain", self.lane)
            s.hsetnx(meta, "lane_id", secrets.token_hex(4))  # window ids: "<lane id>-<first seq>", unique per lane
            self.instance_id = s.hget(meta, "lane_id").decode()
            stored = s.hget(meta, "domain").decode()
            if stored != self.lane:
                raise StoreError(f"Redis lane {self.lane}: its keys hold the lane {stored!r}")
            if s.hget(meta, "subject_index") is None:
                self._index_subjects()
                s.hset(meta, "subject_index", "newest-seq")
            # administration (API keys) issues no proof ids: it takes no clock sequence
            self.clock_seq, self._last_ticks = self._take_clock() if take_clock else (-1, 0)
        except RedisError as exc:
            raise StoreError(f"cannot open the Redis store at {link.target.url}: {exc}") from None

    def k(self, name: str) -> str:
        """A key of this lane (one hash slot per lane)."""
        return f"{{hr:{self.lane}}}:{name}"

    def _index_subjects(self) -> None:
        """Rebuild each subject's record set kept by older releases (``sh:``) as its index of record hash
        to newest seq (``sq:``), which retention needs; records already purged are left out."""
        s = self.link.sync
        purged = int(s.hget(self.k("meta"), "purged_upto"))
        for raw in s.hkeys(self.k("sizes")):
            subject = raw.decode()
            if not s.exists(self.k(f"sh:{subject}")):
                continue
            newest: dict[bytes, int] = {}
            firsts = s.zrange(self.k(f"sb:{subject}"), 0, -1)
            for i in range(0, len(firsts), _PAGE):
                for value in s.hmget(self.k("batches"), firsts[i : i + _PAGE]):
                    if value is None:
                        continue
                    stored = _stored(value)
                    for seq, h in seq_hashes(stored.first_seq, stored.batch.hashes):  # in log order: the
                        if seq > purged:  # last seq of a hash is its newest
                            newest[h] = seq
            keys = [self.k(f"sh:{subject}"), self.k(f"sq:{subject}")]
            self.link.sync_scripts["index_subject"](keys=keys, args=[x for kv in newest.items() for x in kv])
            log.info("lane %s: subject %s's record index rebuilt (%d records)", self.lane, subject, len(newest))

    # ------------------------------------------------------------------ clock sequences

    def _take_clock(self) -> tuple[int, int]:
        """A clock sequence for this instance: a free one of the lane's, else a new one; with its last ticks."""
        s = self.link.sync
        token = self.token
        for raw in sorted(s.hkeys(self.k("clocks"))):
            cs = int(raw)
            if cs not in self._avoid and s.set(self.k(f"clock:{cs}"), token, nx=True, px=self.clock_lease_ms):
                return cs, self._clock_ticks(cs)
        for _ in range(1000):
            cs = secrets.randbelow(1 << 14)
            if cs in self._avoid or not s.hsetnx(REGISTRY, cs, self.lane):
                continue
            s.hset(self.k("clocks"), cs, token)
            if s.set(self.k(f"clock:{cs}"), token, nx=True, px=self.clock_lease_ms):
                return cs, self._clock_ticks(cs)
        raise StoreError("no free clock sequence is left for this lane (16384 exist); remove stale instances")

    def _clock_ticks(self, cs: int) -> int:
        raw = self.link.sync.hget(self.k("clock-ticks"), f"{cs:04x}")
        return int(raw, 16) if raw else 0

    def last_ticks(self) -> int:
        """The newest ticks issued on this instance's clock sequence (the id issuer resumes after it)."""
        return self._last_ticks

    async def has_clock(self, clock_seq: int) -> bool:
        """Whether proof ids with this clock sequence were issued in this lane (by any instance)."""
        if clock_seq in self._clocks or clock_seq == self.clock_seq:
            return True
        with _redis_errors():
            found = bool(await self.link.client.hexists(self.k("clocks"), clock_seq))
        if found:
            self._clocks.add(clock_seq)
        return found

    # ------------------------------------------------------------------ leadership

    async def lead(self) -> int | None:
        """Take or renew the lane's leader lease (and this instance's clock lease); the lease's fencing
        token while leading (a new one whenever the lease ran out and was taken again), else None."""
        keys = [self.k("leader"), self.k("meta"), self.k(f"clock:{self.clock_seq}")]
        args = [self.token, self.lease_ms, self._lease or "", self.clock_lease_ms]
        lease, clock_ours = await self.link.run("lead", keys, args)
        self._lease = lease.decode() if lease else None
        if not clock_ours:  # paused past the clock lease and another instance took it: move to a fresh one
            log.warning("lane %s: clock sequence %d was taken over; taking another", self.lane, self.clock_seq)
            with _redis_errors():
                self.clock_seq, self._last_ticks = await asyncio.to_thread(self._take_clock)
        return self.fence

    async def resign(self) -> None:
        """Give the lane's lease up at a clean stop, so another instance takes over at its next check.

        Any lease naming this process's token goes, also one whose grant never reached it (a check
        cut off by the stop); another instance's lease stays."""
        await self.link.run("resign", [self.k("leader")], [self.token])
        self._lease = None

    @property
    def fence(self) -> int | None:
        """The fencing token of this instance's leader lease (None: not leading)."""
        return None if self._lease is None else int(self._lease.rsplit(":", 1)[1])

    async def watch(self, wake: Callable[[int, int], None]) -> None:
        """Wake local waiters on every commit and anchor any instance publishes, until cancelled."""
        # its own connection, without the read timeout (it idles between messages), pinged now and then
        client: Any
        if self.link.target.cluster:  # a cluster broadcasts PUBLISH: any node's subscription sees it
            node = self.link.client.get_random_node()
            client = aredis.Redis(host=node.host, port=node.port, health_check_interval=15)
        else:
            client = aredis.Redis.from_url(self.link.target.url, health_check_interval=15)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                _, first, last = msg["data"].split()
                wake(int(first), int(last))
        except RedisError as exc:
            raise StoreError(f"Redis subscription: {exc}") from None
        finally:
            await pubsub.aclose()
            await client.aclose()

    # ------------------------------------------------------------------ submissions

    async def add_batch(self, batch: Batch) -> int:
        """Store a request's hashes durably (one script: seq, subject log positions, indexes)."""
        b = batch
        clock = f"{self.clock_seq:04x}"
        last = b.first_ticks + b.count - 1
        keys = [self.k("meta"), self.k("batches"), self.k("seqs"), self.k("ticks"), self.k("clock-ticks")]
        args: list[Any] = [
            clock,
            f"{clock}{_hex16(b.first_ticks)}:{_hex16(last)}",
            _hex16(b.first_ticks),
            _hex16(last),
            b.count,
            _body(b),
            b.subject,
            f"{clock}{_hex16(last + 1)}",  # the ticks index members that start at or before the last ticks
        ]
        if b.subject:
            keys += [self.k("sizes"), self.k(f"sq:{b.subject}"), self.k(f"sb:{b.subject}")]
            args += [b.hashes[i : i + 32] for i in range(0, len(b.hashes), 32)]
        try:
            first, _ = await self.link.run("add_batch", keys, args, wait=True)
        except ScriptRefusedError as exc:
            if exc.reply.startswith("TICKS "):
                raise TicksTakenError(int(exc.reply.split()[1], 16)) from None
            if exc.reply.startswith("FLOOR "):  # received before a closing window's end: re-issue past it
                raise TicksTakenError(int(exc.reply.split()[1], 16) - 1) from None
            raise
        return int(first)

    async def seal(self, floor: int) -> tuple[int, int]:
        """Raise the lane's receive-time floor (see ``Store.seal``): one script, so no batch of any
        instance slips between the floor and the last seq it returns."""
        while True:  # another instance's clock may be ahead: its newest ticks become the floor
            state, value = await self.link.run("seal", [self.k("meta"), self.k("clock-ticks")], [_hex16(floor)])
            if state == b"SEALED":
                return int(value), floor
            floor = ceil_us(int(value, 16))

    async def min_ticks(self, after: int, upto: int) -> int | None:
        """The earliest receive ticks among seqs ``after+1..upto`` (from the seq index's members)."""
        best: int | None = None
        with _redis_errors():
            before = await self.link.client.zrevrangebyscore(self.k("seqs"), after, "-inf", start=0, num=1)
            members = list(before)
            start = after + 1
            while True:
                page = await self.link.client.zrangebyscore(self.k("seqs"), start, upto, start=0, num=_PAGE)
                members += page
                for m in members:  # "<first seq>:<count>:<clock><first ticks>:<last ticks>"
                    first, count, ticks = m.decode().split(":")[:3]
                    if int(first) + int(count) - 1 > after:
                        t = int(ticks[4:], 16) + max(0, after + 1 - int(first))
                        best = t if best is None else min(best, t)
                if len(page) < _PAGE:
                    return best
                start = int(page[-1].decode().split(":")[0]) + 1
                members = []

    async def get_submissions(self, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], SubmissionRecord]:
        """Submissions by (clock sequence, receive ticks); purged ones are absent."""
        keys = list(dict.fromkeys(ids))
        if not keys:
            return {}
        with _redis_errors():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.k("meta"), "purged_upto")
                for clock, ticks in keys:
                    prefix = f"{clock:04x}"
                    pipe.zrevrangebylex(self.k("ticks"), f"({prefix}{_hex16(ticks + 1)}", f"[{prefix}", 0, 1)
                found = await pipe.execute()
            purged = int(found[0] or 0)
            firsts = {key: m[0].rsplit(b":", 1)[1] for key, m in zip(keys, found[1:], strict=True) if m}
            wanted = list(dict.fromkeys(firsts.values()))
            values = await self.link.client.hmget(self.k("batches"), wanted) if wanted else []
        batches = {f: _stored(v) for f, v in zip(wanted, values, strict=True) if v is not None}
        out: dict[tuple[int, int], SubmissionRecord] = {}
        for key, first in firsts.items():
            stored = batches.get(first)
            if stored is None:
                continue
            i = key[1] - stored.batch.first_ticks
            if 0 <= i < stored.batch.count and stored.first_seq + i > purged:
                out[key] = stored.record(i)
        return out

    async def _batches_from(self, first: int, last: int, limit: int | None = None) -> list[StoredBatch]:
        """The batches holding seqs ``first..last`` (the first may start before), in seq order."""
        c = self.link.client
        with _redis_errors():
            before = await c.zrevrangebyscore(self.k("seqs"), first, "-inf", start=0, num=1, withscores=True)
            start = int(before[0][1]) if before else first
            out: list[StoredBatch] = []
            taken = 0
            while True:
                members = await c.zrangebyscore(self.k("seqs"), start, last, start=0, num=_PAGE, withscores=True)
                if not members:
                    return out
                seqs = [str(int(score)) for _, score in members]
                values = await c.hmget(self.k("batches"), seqs)
                for seq, value in zip(seqs, values, strict=True):
                    if value is None:
                        raise CorruptRecordError(f"submissions #{seq}.. are indexed but missing; the store is damaged")
                    stored = _stored(value)
                    if stored.first_seq != int(seq):
                        raise CorruptRecordError(f"submissions #{seq}.. are stored under another seq")
                    out.append(stored)
                    taken += stored.batch.count
                    if limit is not None and taken >= limit:
                        return out
                start = int(members[-1][1]) + 1

    async def backlog(self, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to about ``limit`` submissions after the watermark (up to seq ``upto``), as consecutive batches."""
        with _redis_errors():
            mark = int(await self.link.client.hget(self.k("meta"), "watermark"))
        out: list[StoredBatch] = []
        for stored in await self._batches_from(mark + 1, 2**53 if upto is None else upto, limit):
            if stored.last_seq <= mark:
                continue
            stored = stored.between(mark + 1, stored.last_seq)
            expected = out[-1].last_seq + 1 if out else mark + 1
            if stored.first_seq != expected:
                raise CorruptRecordError(f"submissions after #{expected - 1} are not consecutive; the store is damaged")
            out.append(stored)
        return out

    async def tree_batches(self, tree: TreeRecord) -> list[StoredBatch]:
        """The submissions of a tree, as consecutive batches clipped to its seq range."""
        batches = await self._batches_from(tree.first_seq, tree.last_seq)
        spans = [s.between(tree.first_seq, tree.last_seq) for s in batches if s.last_seq >= tree.first_seq]
        if not spans or spans[0].first_seq != tree.first_seq or sum(s.batch.count for s in spans) != tree.size:
            raise CorruptRecordError(f"tree {tree.window_id}/{tree.tree_index}: its submissions are missing")
        return spans

    # ------------------------------------------------------------------ windows

    async def commit_window(
        self,
        trees: Sequence[TreeRecord],
        targets: Sequence[str],
        heads: Sequence[SubjectHead] = (),
        *,
        term: int | None = None,
    ) -> None:
        """Record a window's trees, open anchor jobs and subject heads, and move the watermark; only
        while this instance holds the lane's lease (the fencing token is compared in the script) and,
        with ``term``, still the lease the window was built under."""
        if not trees:
            return
        if self._lease is None:
            raise LeaseLostError(f"lane {self.lane}: this instance does not lead; it cannot close windows")
        if term is not None and self.fence != term:
            raise LeaseLostError(
                f"lane {self.lane}: the lease was taken again (term {term} to {self.fence}) while the window was"
                " built; it is built again from the store"
            )
        now = time.time_ns()
        first, last = trees[0].first_seq, trees[-1].last_seq
        job = json.dumps({"anchor": None, "attempts": 0, "last_error": None, "created_ns": str(now), "done_ns": None})
        keys = [self.k("meta"), self.k("leader"), self.k("trees"), self.k("tree-seqs"), self.k("open"), self.k("heads")]
        keys += [self.k(f"a:{_tree_key(t.window_id, t.tree_index)}") for t in trees]
        keys += [self.k(f"hh:{h.subject}") for h in heads]
        lease = self._lease
        args: list[Any] = [lease, first, last, len(trees), len(targets), job, self.channel]
        for t in trees:
            args += [_tree_key(t.window_id, t.tree_index), t.first_seq, _tree_doc(t, now)]
        args += list(targets)
        for h in heads:
            args += [h.subject, _head_blob(h)]
        try:
            await self.link.run("commit_window", keys, args, wait=True)
        except ScriptRefusedError as exc:
            text = exc.reply
            if text.startswith("LEASE"):
                if self._lease == lease:  # not a lease this instance took again meanwhile (a new term)
                    self._lease = None
                raise LeaseLostError(f"lane {self.lane}: {text[6:]}; the window is left to the new leader") from None
            raise StoreError(
                f"window starts at #{first} but the watermark is #{text[10:]}; another aggregator ran"
                if text.startswith("WATERMARK")
                else f"Redis refused the window: {text}"
            ) from None

    async def tree_for_seq(self, seq: int) -> TreeRecord | None:
        """The tree holding submission ``seq``, or None while it is still pending."""
        with _redis_errors():
            keys = await self.link.client.zrevrangebyscore(self.k("tree-seqs"), seq, "-inf", start=0, num=1)
            doc = await self.link.client.hget(self.k("trees"), keys[0]) if keys else None
        if doc is None:
            return None
        tree, _ = _tree(doc)
        return tree if tree.last_seq >= seq else None

    async def _trees(self, keys: Sequence[bytes]) -> list[tuple[TreeRecord, int]]:
        if not keys:
            return []
        with _redis_errors():
            docs = await self.link.client.hmget(self.k("trees"), list(keys))
        if any(d is None for d in docs):
            raise CorruptRecordError(f"lane {self.lane}: a tree is indexed but missing; the store is damaged")
        return [_tree(d) for d in docs]

    async def subject_heads(self, upto: int | None = None) -> dict[str, tuple[int, bytes]]:
        """Every subject log's head (size, root) as of the window that ended at seq ``upto`` (None: now),
        in the heads tree's insertion order."""
        c = self.link.client
        bound: int | str = "+inf" if upto is None else upto
        with _redis_errors():
            subjects = [s.decode() for s in await c.hkeys(self.k("heads"))]
            async with c.pipeline(transaction=False) as pipe:
                for s in subjects:
                    pipe.zrevrangebyscore(self.k(f"hh:{s}"), bound, "-inf", start=0, num=1)
                    pipe.zrange(self.k(f"hh:{s}"), 0, 0, withscores=True)
                found = await pipe.execute()
        rows = []
        for i, s in enumerate(subjects):
            members, first = found[2 * i], found[2 * i + 1]
            if members and first:
                h = _head(s, members[0].split(b":", 1)[1])
                rows.append((s, h.size, h.root, int(first[0][1])))
        return insertion_order(rows)

    async def subject_frontier(self, subject: str, upto: int | None = None) -> SubjectHead | None:
        """A subject log's head with its compact range as of the window that ended at seq ``upto`` (None:
        the newest committed one)."""
        with _redis_errors():
            if upto is None:
                blob = await self.link.client.hget(self.k("heads"), subject)
            else:
                found = await self.link.client.zrevrangebyscore(self.k(f"hh:{subject}"), upto, "-inf", start=0, num=1)
                blob = found[0].split(b":", 1)[1] if found else None
        return None if blob is None else _head(subject, blob)

    async def anchored_windows(self, before: str) -> list[TreeRecord]:
        """Trees with heads whose window ended at or before ``before`` (RFC 3339), newest first (up to 64)."""
        out: list[TreeRecord] = []
        offset = 0
        while len(out) < 64:
            with _redis_errors():  # newest first
                keys = await self.link.client.zrevrange(self.k("tree-seqs"), offset, offset + _PAGE - 1)
            if not keys:
                break
            for tree, _ in await self._trees(keys):
                if tree.heads_root is not None and tree.window_end <= before and len(out) < 64:
                    out.append(tree)
            offset += _PAGE
        out.sort(key=lambda t: (-t.last_seq, t.tree_index))
        return out

    # ------------------------------------------------------------------ anchors

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]:
        """Every anchor job of a tree, done or open."""
        with _redis_errors():
            jobs = await self.link.client.hgetall(self.k(f"a:{_tree_key(tree.window_id, tree.tree_index)}"))
        return sorted((_anchor(tree, t.decode(), doc) for t, doc in jobs.items()), key=lambda a: a.target)

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]:
        """(tree, target) pairs not anchored yet, oldest first."""
        with _redis_errors():
            members = await self.link.client.zrange(self.k("open"), 0, -1)
        pairs = [m.decode().rsplit("/", 1) for m in members]
        trees = await self._trees([p[0].encode() for p in pairs])
        return [(tree, target) for (tree, _), (_, target) in zip(trees, pairs, strict=True)]

    async def _record(self, tree: TreeRecord, target: str, anchor_json: str, value: str) -> None:
        key = _tree_key(tree.window_id, tree.tree_index)
        keys = [self.k(f"a:{key}"), self.k("open")]
        args = [target, anchor_json, value, f"{key}/{target}", self.channel, tree.first_seq, tree.last_seq]
        await self.link.run("record_anchor", keys, args)

    async def record_anchor(self, tree: TreeRecord, target: str, anchor_json: str, done_ns: int) -> None:
        """Store a finished anchor (the first one recorded stays: every instance serves the same receipt)."""
        await self._record(tree, target, anchor_json, str(done_ns))

    async def record_anchor_failure(self, tree: TreeRecord, target: str, error: str) -> None:
        """Count a failed attempt (the job stays open)."""
        await self._record(tree, target, "", error[:1000])

    async def put_fabric_block(self, channel: str, number: int, block: bytes) -> None:
        """Keep a Fabric block (a block already kept stays as it is)."""
        checksum = hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest()
        with _redis_errors():
            await self.link.client.hsetnx(self.k("blocks"), f"{channel}/{number}", checksum + block)

    async def get_fabric_block(self, channel: str, number: int) -> bytes | None:
        """A kept Fabric block, checked against its checksum, or None."""
        with _redis_errors():
            value = await self.link.client.hget(self.k("blocks"), f"{channel}/{number}")
        if value is None:
            return None
        checksum, block = value[:16], value[16:]
        if hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest() != checksum:
            raise CorruptRecordError(f"stored Fabric block {number} of {channel} fails its checksum")
        return bytes(block)

    async def purge(self, before_ns: int) -> int:
        """Drop the oldest fully anchored trees that closed before ``before_ns``, with their submissions."""
        if self._lease is None:
            return 0
        c = self.link.client
        with _redis_errors():
            purged = int(await c.hget(self.k("meta"), "purged_upto"))
            keys = await c.zrange(self.k("tree-seqs"), 0, _PAGE - 1)
            open_firsts = {int(s) for _, s in await c.zrange(self.k("open"), 0, -1, withscores=True)}
        gone: list[TreeRecord] = []
        for tree, closed in await self._trees(keys):
            if closed >= before_ns or tree.first_seq in open_firsts:
                break
            gone.append(tree)
        if not gone:
            return 0
        upto = gone[-1].last_seq
        with _redis_errors():
            members = await c.zrangebyscore(self.k("seqs"), "-inf", upto)
        tree_keys = [_tree_key(t.window_id, t.tree_index) for t in gone]
        batch_args = []  # per batch that goes whole: its key, its seqs member, its ticks member
        for m in members:
            first, count, tick_member = m.decode().split(":", 2)
            if int(first) + int(count) - 1 <= upto:
                batch_args += [first, m, f"{tick_member}:{first}"]
        args: list[Any] = [self._lease, purged, upto, len(gone), *tree_keys, len(batch_args) // 3, *batch_args]
        keys = [self.k(n) for n in ("meta", "trees", "tree-seqs", "batches", "seqs", "ticks", "leader")]
        keys += [self.k(f"a:{k}") for k in tree_keys]
        for subject, (hashes, firsts) in (await self._purged_subjects(members, purged, upto)).items():
            keys += [self.k(f"sq:{subject}"), self.k(f"sb:{subject}")]
            args += [len(hashes), *hashes, len(firsts), *firsts]
        await self.link.run("purge", keys, args)
        return upto - purged

    async def _purged_subjects(
        self, members: list[bytes], purged: int, upto: int
    ) -> dict[str, tuple[list[bytes], list[int]]]:
        """Per subject, the record hashes with seqs in (``purged``, ``upto``] and its batches that go whole."""
        firsts = [m.split(b":", 1)[0] for m in members]
        out: dict[str, tuple[list[bytes], list[int]]] = {}
        for i in range(0, len(firsts), _PAGE):
            with _redis_errors():
                values = await self.link.client.hmget(self.k("batches"), firsts[i : i + _PAGE])
            for value in values:
                if value is None:
                    continue
                stored = _stored(value)
                b = stored.batch
                if not b.subject:
                    continue
                hashes, gone = out.setdefault(b.subject, ([], []))
                hashes += [h for seq, h in seq_hashes(stored.first_seq, b.hashes) if purged < seq <= upto]
                if stored.first_seq + b.count - 1 <= upto:
                    gone.append(stored.first_seq)
        return out

    # ------------------------------------------------------------------ subjects, keys, access events

    async def subject_records(self, subject: str, after: int, limit: int) -> list[SubmissionRecord]:
        """The subject's records in log order, from log position ``after`` + 1 on (at most ``limit``)."""
        c = self.link.client
        with _redis_errors():
            purged = int(await c.hget(self.k("meta"), "purged_upto"))
            start = await c.zrevrangebyscore(
                self.k(f"sb:{subject}"), max(after + 1, 0), "-inf", start=0, num=1, withscores=True
            )
            low = start[0][1] if start else 0
            out: list[SubmissionRecord] = []
            while len(out) < limit:
                firsts = await c.zrangebyscore(
                    self.k(f"sb:{subject}"), low, "+inf", start=0, num=_PAGE, withscores=True
                )
                if not firsts:
                    break
                values = await c.hmget(self.k("batches"), [f for f, _ in firsts])
                for value in values:
                    if value is None:
                        continue  # removed by retention
                    stored = _stored(value)
                    for i in range(stored.batch.count):
                        rec = stored.record(i)
                        if rec.log_pos > after and rec.seq > purged and len(out) < limit:
                            out.append(rec)
                low = firsts[-1][1] + 1
        return out

    async def has_record(self, subject: str, record_hash: bytes) -> bool:
        """Whether ``record_hash`` was submitted for ``subject`` in this lane (and retention has not dropped
        its newest submission)."""
        return bool(await self._call("hexists", self.k(f"sq:{subject}"), record_hash))

    async def _add_key(self, subject: str, tenant: str, subject_doc: str, key: SigningKeyRecord) -> None:
        keys = [self.k("subjects"), self.k("signing-keys")]
        doc = json.dumps(
            {"key_id": key.key_id, "party": key.party, "tenant": key.tenant, "jwk": key.jwk, "created": key.created}
        )
        try:
            await self.link.run("add_key", keys, [subject, tenant, subject_doc, key.key_id, key.party, doc])
        except ScriptRefusedError as exc:
            if exc.reply.startswith("CONFLICT "):
                raise ConflictError(exc.reply[9:]) from None
            raise

    async def register_subject(self, subject: str, tenant: str, key: SigningKeyRecord) -> None:
        """Record that ``tenant``'s app owns ``subject``, with the owner's key (ConflictError: another tenant's)."""
        await self._add_key(subject, tenant, json.dumps({"tenant": tenant, "created": key.created}), key)

    async def subject_tenant(self, subject: str) -> str | None:
        """The tenant whose app registered ``subject``, or None."""
        doc = await self._call("hget", self.k("subjects"), subject)
        return None if doc is None else str(json.loads(doc)["tenant"])

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Register a receiving party's key (the same key again is a no-op)."""
        await self._add_key("", "", "", key)

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        """A registered key by thumbprint."""
        doc = await self._call("hget", self.k("signing-keys"), key_id)
        if doc is None:
            return None
        d = json.loads(doc)
        return SigningKeyRecord(d["key_id"], d["party"], d["tenant"], d["jwk"], d["created"])

    async def seen_event(self, replay_id: str) -> bool:
        """Whether an event with these signed bytes was accepted before."""
        return bool(await self._call("hexists", self.k("replays"), replay_id))

    async def add_event(self, event: EventRecord) -> bool:
        """Keep an accepted event; False when its replay id is already there."""
        doc = json.dumps({f: getattr(event, f) for f in _EVENT_FIELDS})
        decision = (
            f"{event.owner}\0{event.receiver}\0{event.domain}" if event.action in ("grant", "deny", "revoke") else ""
        )
        keys = [self.k("replays"), self.k("events"), self.k("meta"), self.k(f"ev:{event.owner}"), self.k("decisions")]
        return bool(await self.link.run("add_event", keys, [event.replay_id, doc, decision], wait=True))

    async def _events(self, ns: Sequence[bytes | int]) -> list[EventRecord]:
        if not ns:
            return []
        docs = await self._call("hmget", self.k("events"), list(ns))
        out = []
        for n, doc in zip(ns, docs, strict=True):
            if doc is None:
                raise CorruptRecordError(f"access event {n!r} is indexed but missing")
            d = json.loads(doc)
            fields: dict[str, Any] = {f: d[f] for f in _EVENT_FIELDS}
            out.append(EventRecord(**fields, n=int(n)))
        return out

    async def events(self, owner: str) -> list[EventRecord]:
        """Every access event of a subject, in acceptance order."""
        return await self._events(await self._call("lrange", self.k(f"ev:{owner}"), 0, -1))

    async def last_decision(self, owner: str, receiver: str, domain: str) -> EventRecord | None:
        """The owner's latest grant, deny or revoke for this receiver and domain."""
        n = await self._call("hget", self.k("decisions"), f"{owner}\0{receiver}\0{domain}")
        return None if n is None else (await self._events([n]))[0]

    # ------------------------------------------------------------------ API keys

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not."""
        doc = await self._call("hget", self.k("api-keys"), key_id)
        return None if doc is None else _api_key(doc)

    def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key (administrative, synchronous)."""
        with _redis_errors():
            if not self.link.sync.hsetnx(self.k("api-keys"), key.key_id, _key_doc(key)):
                raise StoreError(f"an API key with id {key.key_id} exists already")

    def revoke_api_key(self, key_id: str, when: str) -> bool:
        """Mark a key revoked; False when there is no such active key."""
        with _redis_errors():
            return bool(self.link.sync_scripts["revoke"](keys=[self.k("api-keys")], args=[key_id, when]))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        with _redis_errors():
            docs = self.link.sync.hvals(self.k("api-keys"))
        return sorted((_api_key(d) for d in docs), key=lambda k: (k.created, k.key_id))

    # ------------------------------------------------------------------ health

    async def stats(self) -> StoreStats:
        """Counters for metrics."""
        with _redis_errors():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.k("meta"), ["next_seq", "watermark", "purged_upto"])
                pipe.hlen(self.k("trees"))
                pipe.zcard(self.k("open"))
                (last, mark, purged), trees, open_ = await pipe.execute()
        return StoreStats(int(last) - int(purged), max(0, int(last) - int(mark)), int(trees), int(open_))

    async def ping(self) -> None:
        """Raise ``StoreError`` unless Redis answers."""
        await self._call("ping")

    async def close(self) -> None:
        """Nothing of its own: the shared link is closed by whoever opened it."""

    async def _call(self, name: str, *args: Any) -> Any:
        with _redis_errors():
            return await getattr(self.link.client, name)(*args)


def _anchor(tree: TreeRecord, target: str, doc: bytes) -> AnchorRecord:
    try:
        d = json.loads(doc)
        return AnchorRecord(
            tree.window_id,
            tree.tree_index,
            target,
            d["anchor"],
            int(d["attempts"]),
            d["last_error"],
            int(d["created_ns"]),
            None if d["done_ns"] is None else int(d["done_ns"]),
        )
    except (ValueError, KeyError, TypeError):
        raise CorruptRecordError(
            f"tree {tree.window_id}/{tree.tree_index}: the {target} anchor job is damaged"
        ) from None


def open_redis_stores(
    link: RedisLink, domains: Sequence[str], *, lease_seconds: float = 5.0
) -> tuple[RedisStore, dict[str, RedisStore]]:
    """The v1 lane's store and one per domain, on one link."""
    main = RedisStore(link, lease_seconds=lease_seconds)
    used = {main.clock_seq}
    lanes: dict[str, RedisStore] = {}
    for d in domains:
        lanes[d] = RedisStore(link, domain=d, lease_seconds=lease_seconds, avoid_clock_seqs=used)
        used.add(lanes[d].clock_seq)
    return main, lanes
