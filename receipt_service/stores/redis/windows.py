"""A lane's windows on the shared store: committed windows and their trees, subject heads, anchor jobs and
anchors, and the Fabric blocks kept as evidence."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from ...errors import CorruptRecordError, LeaseLostError, StoreError
from ..base import (
    AnchorRecord,
    SubjectHead,
    TreeRecord,
    insertion_order,
)
from .keys import LaneKeys
from .link import ScriptRefusedError, redis_errors
from .records import PAGE, anchor_from_doc, head_blob, head_from_blob, tree_doc, tree_from_doc, tree_key


class WindowRecords(LaneKeys):
    """The window part of ``RedisStore``."""

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
        keys += [self.k(f"a:{tree_key(t.window_id, t.tree_index)}") for t in trees]
        keys += [self.k(f"hh:{h.subject}") for h in heads]
        lease = self._lease
        args: list[Any] = [lease, first, last, len(trees), len(targets), job, self.channel]
        for t in trees:
            args += [tree_key(t.window_id, t.tree_index), t.first_seq, tree_doc(t, now)]
        args += list(targets)
        for h in heads:
            args += [h.subject, head_blob(h)]
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
        with redis_errors():
            keys = await self.link.client.zrevrangebyscore(self.k("tree-seqs"), seq, "-inf", start=0, num=1)
            doc = await self.link.client.hget(self.k("trees"), keys[0]) if keys else None
        if doc is None:
            return None
        tree, _ = tree_from_doc(doc)
        return tree if tree.last_seq >= seq else None

    async def _trees(self, keys: Sequence[bytes]) -> list[tuple[TreeRecord, int]]:
        if not keys:
            return []
        with redis_errors():
            docs = await self.link.client.hmget(self.k("trees"), list(keys))
        if any(d is None for d in docs):
            raise CorruptRecordError(f"lane {self.lane}: a tree is indexed but missing; the store is damaged")
        return [tree_from_doc(d) for d in docs]

    async def subject_heads(self, upto: int | None = None) -> dict[str, tuple[int, bytes]]:
        """Every subject log's head (size, root) as of the window that ended at seq ``upto`` (None: now),
        in the heads tree's insertion order."""
        c = self.link.client
        bound: int | str = "+inf" if upto is None else upto
        with redis_errors():
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
                h = head_from_blob(s, members[0].split(b":", 1)[1])
                rows.append((s, h.size, h.root, int(first[0][1])))
        return insertion_order(rows)

    async def subject_frontier(self, subject: str, upto: int | None = None) -> SubjectHead | None:
        """A subject log's head with its compact range as of the window that ended at seq ``upto`` (None:
        the newest committed one)."""
        with redis_errors():
            if upto is None:
                blob = await self.link.client.hget(self.k("heads"), subject)
            else:
                found = await self.link.client.zrevrangebyscore(self.k(f"hh:{subject}"), upto, "-inf", start=0, num=1)
                blob = found[0].split(b":", 1)[1] if found else None
        return None if blob is None else head_from_blob(subject, blob)

    async def anchored_windows(self, before: str) -> list[TreeRecord]:
        """Trees with heads whose window ended at or before ``before`` (RFC 3339), newest first (up to 64)."""
        out: list[TreeRecord] = []
        offset = 0
        while len(out) < 64:
            with redis_errors():  # newest first
                keys = await self.link.client.zrevrange(self.k("tree-seqs"), offset, offset + PAGE - 1)
            if not keys:
                break
            for tree, _ in await self._trees(keys):
                if tree.heads_root is not None and tree.window_end <= before and len(out) < 64:
                    out.append(tree)
            offset += PAGE
        out.sort(key=lambda t: (-t.last_seq, t.tree_index))
        return out

    # ------------------------------------------------------------------ anchors

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]:
        """Every anchor job of a tree, done or open."""
        with redis_errors():
            jobs = await self.link.client.hgetall(self.k(f"a:{tree_key(tree.window_id, tree.tree_index)}"))
        return sorted((anchor_from_doc(tree, t.decode(), doc) for t, doc in jobs.items()), key=lambda a: a.target)

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]:
        """(tree, target) pairs not anchored yet, oldest first."""
        with redis_errors():
            members = await self.link.client.zrange(self.k("open"), 0, -1)
        pairs = [m.decode().rsplit("/", 1) for m in members]
        trees = await self._trees([p[0].encode() for p in pairs])
        return [(tree, target) for (tree, _), (_, target) in zip(trees, pairs, strict=True)]

    async def _record(self, tree: TreeRecord, target: str, anchor_json: str, value: str) -> None:
        key = tree_key(tree.window_id, tree.tree_index)
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
        with redis_errors():
            await self.link.client.hsetnx(self.k("blocks"), f"{channel}/{number}", checksum + block)

    async def get_fabric_block(self, channel: str, number: int) -> bytes | None:
        """A kept Fabric block, checked against its checksum, or None."""
        with redis_errors():
            value = await self.link.client.hget(self.k("blocks"), f"{channel}/{number}")
        if value is None:
            return None
        checksum, block = value[:16], value[16:]
        if hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest() != checksum:
            raise CorruptRecordError(f"stored Fabric block {number} of {channel} fails its checksum")
        return bytes(block)
