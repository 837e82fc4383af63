"""``RedisStore``: the ``Store`` seam for one lane on a shared Redis."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from ...errors import CorruptRecordError, StoreError, TicksTakenError
from ...ids import ceil_us
from ..base import (
    Batch,
    StoredBatch,
    StoreStats,
    SubmissionRecord,
    TreeRecord,
    seq_hashes,
)
from .access import AccessRecords
from .keys import REGISTRY, V1_LANE
from .link import RedisLink, ScriptRefusedError, redis_errors
from .records import PAGE, batch_body, hex16, stored_batch, tree_key
from .windows import WindowRecords

log = logging.getLogger("receipt_service.store")


class RedisStore(WindowRecords, AccessRecords):
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
            for i in range(0, len(firsts), PAGE):
                for value in s.hmget(self.k("batches"), firsts[i : i + PAGE]):
                    if value is None:
                        continue
                    stored = stored_batch(value)
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
        with redis_errors():
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
            with redis_errors():
                self.clock_seq, self._last_ticks = await asyncio.to_thread(self._take_clock)
        return self.fence

    async def resign(self) -> None:
        """Give the lane's lease up at a clean stop, so another instance takes over at its next check.

        Any lease naming this process's token goes, also one whose grant never reached it (a check
        cut off by the stop); another instance's lease stays."""
        await self.link.run("resign", [self.k("leader")], [self.token])
        self._lease = None

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
            f"{clock}{hex16(b.first_ticks)}:{hex16(last)}",
            hex16(b.first_ticks),
            hex16(last),
            b.count,
            batch_body(b),
            b.subject,
            f"{clock}{hex16(last + 1)}",  # the ticks index members that start at or before the last ticks
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
            state, value = await self.link.run("seal", [self.k("meta"), self.k("clock-ticks")], [hex16(floor)])
            if state == b"SEALED":
                return int(value), floor
            floor = ceil_us(int(value, 16))

    async def min_ticks(self, after: int, upto: int) -> int | None:
        """The earliest receive ticks among seqs ``after+1..upto`` (from the seq index's members)."""
        best: int | None = None
        with redis_errors():
            before = await self.link.client.zrevrangebyscore(self.k("seqs"), after, "-inf", start=0, num=1)
            members = list(before)
            start = after + 1
            while True:
                page = await self.link.client.zrangebyscore(self.k("seqs"), start, upto, start=0, num=PAGE)
                members += page
                for m in members:  # "<first seq>:<count>:<clock><first ticks>:<last ticks>"
                    first, count, ticks = m.decode().split(":")[:3]
                    if int(first) + int(count) - 1 > after:
                        t = int(ticks[4:], 16) + max(0, after + 1 - int(first))
                        best = t if best is None else min(best, t)
                if len(page) < PAGE:
                    return best
                start = int(page[-1].decode().split(":")[0]) + 1
                members = []

    async def get_submissions(self, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], SubmissionRecord]:
        """Submissions by (clock sequence, receive ticks); purged ones are absent."""
        keys = list(dict.fromkeys(ids))
        if not keys:
            return {}
        with redis_errors():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.k("meta"), "purged_upto")
                for clock, ticks in keys:
                    prefix = f"{clock:04x}"
                    pipe.zrevrangebylex(self.k("ticks"), f"({prefix}{hex16(ticks + 1)}", f"[{prefix}", 0, 1)
                found = await pipe.execute()
            purged = int(found[0] or 0)
            firsts = {key: m[0].rsplit(b":", 1)[1] for key, m in zip(keys, found[1:], strict=True) if m}
            wanted = list(dict.fromkeys(firsts.values()))
            values = await self.link.client.hmget(self.k("batches"), wanted) if wanted else []
        batches = {f: stored_batch(v) for f, v in zip(wanted, values, strict=True) if v is not None}
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
        with redis_errors():
            before = await c.zrevrangebyscore(self.k("seqs"), first, "-inf", start=0, num=1, withscores=True)
            start = int(before[0][1]) if before else first
            out: list[StoredBatch] = []
            taken = 0
            while True:
                members = await c.zrangebyscore(self.k("seqs"), start, last, start=0, num=PAGE, withscores=True)
                if not members:
                    return out
                seqs = [str(int(score)) for _, score in members]
                values = await c.hmget(self.k("batches"), seqs)
                for seq, value in zip(seqs, values, strict=True):
                    if value is None:
                        raise CorruptRecordError(f"submissions #{seq}.. are indexed but missing; the store is damaged")
                    stored = stored_batch(value)
                    if stored.first_seq != int(seq):
                        raise CorruptRecordError(f"submissions #{seq}.. are stored under another seq")
                    out.append(stored)
                    taken += stored.batch.count
                    if limit is not None and taken >= limit:
                        return out
                start = int(members[-1][1]) + 1

    async def backlog(self, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to about ``limit`` submissions after the watermark (up to seq ``upto``), as consecutive batches."""
        with redis_errors():
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

    async def purge(self, before_ns: int) -> int:
        """Drop the oldest fully anchored trees that closed before ``before_ns``, with their submissions."""
        if self._lease is None:
            return 0
        c = self.link.client
        with redis_errors():
            purged = int(await c.hget(self.k("meta"), "purged_upto"))
            keys = await c.zrange(self.k("tree-seqs"), 0, PAGE - 1)
            open_firsts = {int(s) for _, s in await c.zrange(self.k("open"), 0, -1, withscores=True)}
        gone: list[TreeRecord] = []
        for tree, closed in await self._trees(keys):
            if closed >= before_ns or tree.first_seq in open_firsts:
                break
            gone.append(tree)
        if not gone:
            return 0
        upto = gone[-1].last_seq
        with redis_errors():
            members = await c.zrangebyscore(self.k("seqs"), "-inf", upto)
        tree_keys = [tree_key(t.window_id, t.tree_index) for t in gone]
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
        for i in range(0, len(firsts), PAGE):
            with redis_errors():
                values = await self.link.client.hmget(self.k("batches"), firsts[i : i + PAGE])
            for value in values:
                if value is None:
                    continue
                stored = stored_batch(value)
                b = stored.batch
                if not b.subject:
                    continue
                hashes, gone = out.setdefault(b.subject, ([], []))
                hashes += [h for seq, h in seq_hashes(stored.first_seq, b.hashes) if purged < seq <= upto]
                if stored.first_seq + b.count - 1 <= upto:
                    gone.append(stored.first_seq)
        return out

    # ------------------------------------------------------------------ subject logs

    async def subject_records(self, subject: str, after: int, limit: int) -> list[SubmissionRecord]:
        """The subject's records in log order, from log position ``after`` + 1 on (at most ``limit``)."""
        c = self.link.client
        with redis_errors():
            purged = int(await c.hget(self.k("meta"), "purged_upto"))
            start = await c.zrevrangebyscore(
                self.k(f"sb:{subject}"), max(after + 1, 0), "-inf", start=0, num=1, withscores=True
            )
            low = start[0][1] if start else 0
            out: list[SubmissionRecord] = []
            while len(out) < limit:
                firsts = await c.zrangebyscore(self.k(f"sb:{subject}"), low, "+inf", start=0, num=PAGE, withscores=True)
                if not firsts:
                    break
                values = await c.hmget(self.k("batches"), [f for f, _ in firsts])
                for value in values:
                    if value is None:
                        continue  # removed by retention
                    stored = stored_batch(value)
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

    # ------------------------------------------------------------------ health

    async def stats(self) -> StoreStats:
        """Counters for metrics."""
        with redis_errors():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.k("meta"), ["next_seq", "watermark", "purged_upto"])
                pipe.hlen(self.k("trees"))
                pipe.zcard(self.k("open"))
                (last, mark, purged), trees, open_ = await pipe.execute()
        return StoreStats(int(last) - int(purged), max(0, int(last) - int(mark)), int(trees), int(open_))

    async def ping(self) -> None:
        """Raise ``StoreError`` unless Redis answers."""
        await self._call("ping")

    def stopped(self) -> str | None:
        """Never: Redis's outages end without a restart (every call retries the link)."""
        return None

    async def close(self) -> None:
        """Nothing of its own: the shared link is closed by whoever opened it."""


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
