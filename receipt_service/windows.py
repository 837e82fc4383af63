"""Time windows: close a window every ``window_seconds``, build its trees, anchor every root.

Crash safety comes from the store's order of writes: submissions are durable before they are
acknowledged; a window's trees, its open anchor jobs and the new watermark are committed in
one transaction; an anchor is recorded only after its backend took it. After a crash the
backlog past the watermark is simply the next window (a window that was being built is rebuilt)
and every open anchor job is sent again (backends are idempotent per tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from itertools import accumulate

from receipt_verifier import proof_id as pid
from receipt_verifier.heads import IndexedHeads
from receipt_verifier.logs import frontier_append, frontier_root, record_leaf
from receipt_verifier.model import Anchor

from .anchors import AnchorBackend, BatchedBackend, ChainedBackend, anchor_json
from .chain import heads_after, indexed_heads, window_trees
from .crashpoints import crash_point
from .errors import CorruptRecordError, LeaseLostError, ServiceError, StoreStoppedError
from .ids import TICKS_PER_US, ceil_us, ticks_iso
from .leadership import Leadership
from .ledger import tree_root
from .metrics import Metrics
from .stores.base import Store, StoredBatch, SubjectHead, TreeRecord
from .trees import PackedTree, TreeBuilder, TreeCache, commitments
from .waiters import Waiters

log = logging.getLogger("receipt_service.windows")

MAX_TREES_PER_WINDOW = 40


def tree_records(window_id: str, first_seq: int, trees: Sequence[PackedTree], start: str, end: str) -> list[TreeRecord]:
    """Pure: the records of a window's consecutive trees, starting at ``first_seq``."""
    out = []
    for index, tree in enumerate(trees):
        out.append(TreeRecord(window_id, index, first_seq, first_seq + tree.size - 1, tree.root, start, end))
        first_seq += tree.size
    return out


class Aggregator:
    """Owns the window clock and the anchor workers of one lane of a service instance.

    On a store shared by several instances only the leader (``Leadership``) closes windows
    and sends anchors; the others accept hashes and serve receipts, woken by ``store.watch``.
    """

    def __init__(
        self,
        store: Store,
        backends: Sequence[AnchorBackend],
        metrics: Metrics,
        *,
        window_seconds: float = 1.0,
        max_leaves: int = 25_000,
        max_subjects: int = 4_000,
        retry_max_seconds: float = 30.0,
        retention_seconds: float | None = None,
        empty_window_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.backends = {b.target: b for b in backends}
        self.metrics = metrics
        self.window_seconds = window_seconds
        self.max_leaves = max_leaves
        self.max_subjects = max_subjects
        self.retry_max_seconds = retry_max_seconds
        self.retention_seconds = retention_seconds
        self.empty_window_seconds = empty_window_seconds
        self.waiters = Waiters()
        self.trees = TreeCache()
        self.builder = TreeBuilder()
        self._queues: dict[str, asyncio.Queue[TreeRecord]] = {t: asyncio.Queue() for t in self.backends}
        self._tasks: list[asyncio.Task[None]] = []
        self._close_lock = asyncio.Lock()
        self._window_start_ns = time.time_ns()
        self._stopping = asyncio.Event()
        self.last_error: str | None = None  # why the last window could not be closed (shown by /readyz)
        self._heads: dict[str, tuple[int, bytes]] | None = None  # domain lanes: every log's head, insertion order
        self._prev_end: tuple[int, str] | None = None  # (last seq, end) of the lane's newest window
        self.leadership = Leadership(store, self._stopping, self._resume)
        self._sending: dict[str, set[tuple[str, int]]] = {t: set() for t in self.backends}  # trees in flight

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the lead if free (resuming open anchor jobs left by a previous leader), then start the
        clock, the workers and the watch on other instances' changes."""
        await self.leadership.check()
        for target, backend in self.backends.items():
            workers = 1 if isinstance(backend, ChainedBackend) else max(1, backend.concurrency)  # a chain: in order
            for i in range(workers):  # workers share the target's queue
                self._tasks.append(asyncio.create_task(self._anchor_worker(target), name=f"anchor-{target}-{i}"))
        self._tasks.append(asyncio.create_task(self._clock(), name="window-clock"))
        self.leadership.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        if self.retention_seconds is not None:
            self._tasks.append(asyncio.create_task(self._retention(), name="retention"))

    async def drain(self, timeout: float) -> bool:
        """Close the open window and anchor everything; True when nothing this instance led was left open.

        A lead held (or lapsed) when the drain began is kept, renewed and taken again until its last window
        is closed and its open anchors are sent; then the lease task stops and the lead is handed over. No
        other lead is taken; a lead that moves to another instance leaves the rest to it."""
        self._stopping.set()
        lead = self.leadership
        drain_led = lead.begin_drain()
        deadline = time.monotonic() + timeout
        closed, failed, retry_at = not drain_led, 0, 0.0
        try:
            while True:
                if not closed and lead.leads() and time.monotonic() >= retry_at:
                    try:
                        await asyncio.wait_for(self.close_window(), max(0.0, deadline - time.monotonic()))
                        closed = True
                    except StoreStoppedError:
                        raise  # nothing will close it before a restart: said below, the lead handed over
                    except (TimeoutError, ServiceError) as exc:
                        if not failed:
                            log.warning("drain: the last window is not closed yet (tried again while it may): %s", exc)
                        failed += 1
                        retry_at = time.monotonic() + min(0.5, 0.05 * 2**failed)
                if not lead.draining:  # the lead moved to another instance: it closes and anchors the rest
                    break
                busy = any(q.qsize() or self._sending[t] for t, q in self._queues.items())
                left = [] if busy else await self._open_jobs()
                if closed and not busy and not left:
                    break
                if time.monotonic() > deadline:
                    log.error(
                        "drain: %s%d anchor(s) being sent, %d job(s) open; the next leader resumes them",
                        "" if closed else "the last window is not closed, ",
                        sum(map(len, self._sending.values())),
                        len(left),
                    )
                    await lead.hand_over()
                    return False
                await asyncio.sleep(0.01 if busy else 0.05)
            await lead.hand_over()
        except ServiceError as exc:
            log.error("drain stopped early: %s", exc)
            with contextlib.suppress(ServiceError):
                await lead.hand_over()
            return False
        except Exception:  # a bug: in full; the lead is handed over all the same
            log.exception("drain stopped early")
            with contextlib.suppress(ServiceError):
                await lead.hand_over()
            return False
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, lead.stop(), return_exceptions=True)
            await asyncio.to_thread(self.builder.close)
        return closed  # False: the lead moved away before the last window closed (its new leader closes it)

    @property
    def leading(self) -> bool:
        """Whether this instance leads the lane (closes its windows, sends its anchors)."""
        return self.leadership.leading

    async def _open_jobs(self) -> list[tuple[TreeRecord, str]]:
        """The store's open anchor jobs of this instance's targets."""
        return [j for j in await self.store.open_anchor_jobs() if j[1] in self._queues]

    async def _clock(self) -> None:
        next_at = time.monotonic() + self.window_seconds
        failed, since = 0, 0.0  # a store outage: one line when it starts, one when it ends (not one per tick)
        lane = self.store.domain or "v1"
        while not self._stopping.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._stopping.is_set():  # the drain closes the last window
                return
            next_at += self.window_seconds
            if next_at < time.monotonic():  # a slow window: skip ticks rather than pile them up
                next_at = time.monotonic() + self.window_seconds
            if not self.leadership.leads():
                continue
            try:
                await self.close_window()
            except LeaseLostError as exc:
                log.warning("%s", exc)
                with contextlib.suppress(ServiceError):  # the store failing now: the lease task says so and retries
                    await self.leadership.check()
                continue
            except ServiceError as exc:
                if not failed:
                    since = time.monotonic()
                    log.error(
                        "lane %s: window not closed (its hashes stay in the backlog; retrying every %gs, quietly): %s",
                        lane,
                        self.window_seconds,
                        exc,
                    )
                failed += 1
                continue
            except Exception:  # a bug, not an outage: every occurrence with its traceback
                log.exception("lane %s: window not closed (its hashes stay in the backlog for the next one)", lane)
                continue
            if failed:
                took = time.monotonic() - since
                log.warning("lane %s: windows close again after %d failed attempt(s) over %.1fs", lane, failed, took)
                failed = 0

    # ------------------------------------------------------------------ leadership

    def _resume(self, jobs: Sequence[tuple[TreeRecord, str]], new_term: bool) -> None:
        """Queue exactly the store's open anchor jobs, oldest first (none twice, none in flight); a new
        term also forgets the lane's cached state (another leader may have moved the heads)."""
        if new_term:
            self._heads = None
            self._prev_end = None
        for q in self._queues.values():
            while not q.empty():
                q.get_nowait()
        for tree, target in sorted(jobs, key=lambda j: j[0].first_seq):
            if target not in self._queues:
                log.warning("tree %s/%s waits for target %s, which is not configured", *_key(tree), target)
            elif _key(tree) not in self._sending[target]:  # one being sent is not sent twice at once
                self._queues[target].put_nowait(tree)

    async def _watch(self) -> None:
        failed = 0  # an outage: one line, not one per retry
        while not self._stopping.is_set():
            try:
                await self.store.watch(self.waiters.wake_range)
                return  # nothing to watch (a store of one process)
            except ServiceError as exc:
                if not failed:
                    log.warning("watching other instances' changes failed, retrying every second, quietly: %s", exc)
                failed += 1
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ windows

    async def close_window(self) -> int:
        """Close the current window: build and commit its trees, queue their anchors; returns leaves."""
        try:
            total = await self._close_window()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        return total

    async def _close_window(self) -> int:
        async with self._close_lock:
            total = 0
            while True:
                t0 = time.perf_counter()
                lead = self.leadership
                term, epoch = lead.term, lead.epoch  # the window is built on this term's state, committed in it
                if self.store.lease_seconds is not None and (term is None or not lead.leading):
                    raise LeaseLostError(
                        f"lane {self.store.domain or 'v1'}: this instance does not lead now; it closes no window"
                    )
                spans, end, capped = await self._sealed_backlog()
                if not spans:
                    self._window_start_ns = time.time_ns()
                    return total
                start = await self._window_start(spans, end)
                window_id = f"{self.store.instance_id}-{spans[0].first_seq}"
                trees = await self.builder.build([s.columns(self.store.domain) for s in spans], self.max_leaves)
                records = tree_records(window_id, spans[0].first_seq, trees, start, end)
                leaves = sum(s.batch.count for s in spans)
                changed: list[SubjectHead] = []
                try:
                    if self.store.domain is not None:  # the window also commits to every subject log's head
                        changed, heads = await self._subject_heads(spans, term)
                        records = [replace(r, heads_root=heads.root, heads_size=heads.size) for r in records]
                    crash_point("window-built")
                    async with lead.term_lock:  # no new term reads the open jobs between this commit and its queueing
                        if self.store.lease_seconds is not None and (lead.epoch != epoch or not lead.leads()):
                            raise LeaseLostError(
                                f"lane {self.store.domain or 'v1'}: the lead changed while the window was built;"
                                " it is built again"
                            )
                        try:
                            await self.store.commit_window(records, list(self.backends), changed, term=term)
                        except LeaseLostError:
                            raise
                        except ServiceError:  # it may have committed (a lost reply, replicas late): the next
                            lead.requeue = True  # check queues whatever is open again, this window too
                            raise
                        if self._heads is not None:
                            self._heads = heads_after(self._heads, changed)
                        self._prev_end = (records[-1].last_seq, end)
                        crash_point("window-committed")
                        for record in records:
                            for q in self._queues.values():
                                q.put_nowait(record)
                except BaseException:
                    self._heads = None  # reload from the store: the commit may or may not have happened
                    raise
                self._window_start_ns = time.time_ns()
                for record, tree in zip(records, trees, strict=True):
                    self.trees.put(_key(record), tree)
                    self.waiters.wake_range(record.first_seq, record.last_seq)
                total += leaves
                self.metrics.window_build_seconds.observe(time.perf_counter() - t0)
                self.metrics.window_leaves.observe(leaves)
                if not capped:
                    return total

    async def _sealed_backlog(self) -> tuple[list[StoredBatch], str, bool]:
        """The next window's batches, its end, and whether more batches wait (a cut window).

        The store is sealed first: every hash stored by then was received by the seal's floor, and
        any later one at or after it. So each hash of a window was received within its start and end
        (spec section 14.7), even when a request received before the close is stored after it. A
        window is cut at ``MAX_TREES_PER_WINDOW`` trees and, on a domain lane, at ``max_subjects``
        subject logs (its transition proof must fit one Fabric transaction)."""
        limit = self.max_leaves * MAX_TREES_PER_WINDOW
        last, floor = await self.store.seal(ceil_us(pid.unix_ns_to_ticks(time.time_ns())))
        spans = await self.store.backlog(limit, last)
        keep = self._within_subjects(spans)
        if keep == len(spans) and (not spans or spans[-1].last_seq >= last):
            return spans, ticks_iso(floor), False
        cut = await self._cut(spans, keep, last)
        if cut is not None:
            return cut[0], cut[1], True
        log.warning(
            "lane %s: no cut in receive-time order within %d batches; one window takes the whole backlog",
            self.store.domain or "v1",
            keep,
        )
        spans = await self.store.backlog(2**62, last)
        return spans, ticks_iso(floor), False

    def _within_subjects(self, spans: Sequence[StoredBatch]) -> int:
        """How many leading batches change at most ``max_subjects`` subject logs."""
        if self.store.domain is None:
            return len(spans)
        subjects: set[str] = set()
        for i, span in enumerate(spans):
            if span.batch.subject and span.batch.subject not in subjects:
                if len(subjects) == self.max_subjects:
                    return i
                subjects.add(span.batch.subject)
        return len(spans)

    async def _cut(self, spans: Sequence[StoredBatch], keep: int, last: int) -> tuple[list[StoredBatch], str] | None:
        """The longest prefix of at most ``keep`` of ``spans`` whose hashes were all received no later
        than every hash after it up to ``last``, with its end (instances' clocks interleave on a shared
        store); None when there is none."""
        rest = None if spans[-1].last_seq >= last else await self.store.min_ticks(spans[-1].last_seq, last)
        after = [0] * (len(spans) + 1)  # after[i]: the earliest receive time from spans[i] on (0: none)
        after[len(spans)] = rest if rest is not None else 0
        for i in range(len(spans) - 1, -1, -1):
            first = spans[i].batch.first_ticks
            after[i] = first if not after[i + 1] else min(first, after[i + 1])
        received_by = list(accumulate((s.batch.first_ticks + s.batch.count - 1 for s in spans), max))
        for i in range(keep, 0, -1):
            end = ceil_us(received_by[i - 1])
            if not after[i] or end <= after[i]:
                return list(spans[:i]), ticks_iso(end)
        return None

    async def _window_start(self, spans: Sequence[StoredBatch], end: str) -> str:
        """A window starts where the lane's previous window ended, so windows tile time (a chain needs it);
        a lane's first window starts at its first receive time at the latest."""
        first_seq = spans[0].first_seq
        if self._prev_end is None or self._prev_end[0] != first_seq - 1:
            prev = await self.store.tree_for_seq(first_seq - 1)
            self._prev_end = None if prev is None else (prev.last_seq, prev.window_end)
        if self._prev_end is not None:
            return min(self._prev_end[1], end)
        earliest = min(s.batch.first_ticks for s in spans)
        started = pid.unix_ns_to_ticks(self._window_start_ns)
        return ticks_iso(min(earliest, started) // TICKS_PER_US * TICKS_PER_US)

    async def _subject_heads(
        self, spans: Sequence[StoredBatch], term: int | None
    ) -> tuple[list[SubjectHead], IndexedHeads]:
        """The new heads of the subject logs these batches extend, and the heads tree of the domain.

        Each log is extended from its stored compact range with this window's entries, so the work is
        proportional to the new records, not to the history."""
        domain = self.store.domain
        assert domain is not None
        known = self._heads
        if known is None:
            known = await self.store.subject_heads()
            if (
                self.leadership.term == term
            ):  # kept only in the term it was read in (a new term may have begun meanwhile)
                self._heads = known
        new: dict[str, list[tuple[int, bytes]]] = {}
        for span in spans:
            b = span.batch
            if b.subject:  # the log entries are the span's leaf values, as the tree builder computes them
                new.setdefault(b.subject, []).extend(enumerate(commitments(span.columns(domain)), b.log_first))
        changed = []
        for subject, entries in new.items():
            head = await self.store.subject_frontier(subject)
            size, frontier = (head.size, list(head.frontier)) if head is not None else (0, [])
            if entries[0][0] != size:  # not a continuation of the stored head: rebuild from the records
                rows = await self.store.subject_records(subject, -1, entries[-1][0] + 1)
                if len(rows) != entries[-1][0] + 1:
                    raise CorruptRecordError(
                        f"the log of {subject} in {domain} lacks records (retention removed them?)"
                    )
                size, frontier = 0, []
                entries = [
                    (r.log_pos, record_leaf(r.nonce, r.proof_id, r.hash, domain, subject, r.log_pos)) for r in rows
                ]
            frontier = await asyncio.to_thread(_extend, frontier, size, [leaf for _, leaf in entries])
            size += len(entries)
            changed.append(SubjectHead(subject, size, frontier_root(frontier), tuple(frontier)))
        heads = heads_after(known, changed)
        return changed, await asyncio.to_thread(indexed_heads, heads)  # linear in subjects: off the event loop

    # ------------------------------------------------------------------ anchoring

    async def _anchor_worker(self, target: str) -> None:
        backend = self.backends[target]
        queue = self._queues[target]
        while True:
            idle = self.empty_window_seconds if isinstance(backend, ChainedBackend) else None
            if idle is None or queue.qsize():
                tree = await queue.get()
            else:
                try:
                    async with asyncio.timeout(idle):
                        tree = await queue.get()
                except TimeoutError:  # a chained target idle this long gets an empty window
                    assert isinstance(backend, ChainedBackend)
                    if self.leadership.leads():
                        await self._empty_window(backend, queue, idle)
                    continue
            if not self.leadership.leads() or _key(tree) in self._sending[target]:
                continue  # the leader resumes it from the store's open jobs; a tree in flight is not sent twice
            self._sending[target].add(_key(tree))
            try:
                if isinstance(backend, ChainedBackend):
                    await self._chain_until_done(backend, tree)
                else:
                    await self._anchor_until_done(backend, tree)
            finally:
                self._sending[target].discard(_key(tree))

    async def _chain_until_done(self, backend: ChainedBackend, tree: TreeRecord) -> None:
        """Append ``tree``'s whole window to the target's chain (its other trees are then done too); a
        target that takes several windows at once also gets the closed windows after it (a backlog)."""

        async def attempt() -> tuple[int, int]:
            if await self._anchored(tree, backend.target):  # appended with an earlier tree of its window
                return tree.first_seq, tree.last_seq
            windows = [await window_trees(self.store, tree)]
            done: Sequence[Sequence[Anchor]]
            if isinstance(backend, BatchedBackend):
                windows += await self._closed_after(windows[0][-1], backend.target, backend.max_batch - 1)
                done = await backend.anchor_windows(self.store, windows)
            else:
                done = [await backend.anchor_window(self.store, windows[0])]
            crash_point("anchor-sent")
            for trees, anchors in zip(windows, done, strict=False):  # a prefix of the windows, if not all fit
                for t, anchor in zip(trees, anchors, strict=True):
                    if not await self._anchored(t, backend.target):
                        await self.store.record_anchor(t, backend.target, anchor_json(anchor), time.time_ns())
            return windows[0][0].first_seq, windows[len(done) - 1][-1].last_seq

        await self._until_done(backend.target, tree, attempt)

    async def _closed_after(self, last: TreeRecord, target: str, limit: int) -> list[list[TreeRecord]]:
        """Up to ``limit`` closed windows right after the tree ``last`` not yet anchored on ``target``."""
        out: list[list[TreeRecord]] = []
        while len(out) < limit:
            nxt = await self.store.tree_for_seq(last.last_seq + 1)
            if nxt is None or nxt.first_seq != last.last_seq + 1 or await self._anchored(nxt, target):
                break
            trees = await window_trees(self.store, nxt)
            out.append(trees)
            last = trees[-1]
        return out

    async def _empty_window(self, backend: ChainedBackend, queue: asyncio.Queue[TreeRecord], idle: float) -> None:
        async with self._close_lock:  # every window closed after this one ends later: the chain's order
            if queue.qsize():
                return  # a window came: it moves the chain on
            last, floor = await self.store.seal(ceil_us(pid.unix_ns_to_ticks(time.time_ns())))
            if await self.store.backlog(1, last):
                return  # hashes wait for the next window, which moves the chain on; none may predate this end
            end = ticks_iso(floor)
        try:
            seq = await backend.empty_window(self.store, idle, end)
        except ServiceError as exc:
            log.warning("empty window to %s not appended (tried again when idle): %s", backend.target, exc)
            return
        if seq is not None:
            log.info("lane %s: empty window %d appended to %s", self.store.domain or "v1", seq, backend.target)

    async def _anchored(self, tree: TreeRecord, target: str) -> bool:
        return any(j.target == target and j.anchor_json is not None for j in await self.store.anchors_for(tree))

    async def _anchor_until_done(self, backend: AnchorBackend, tree: TreeRecord) -> None:
        root = tree_root(self.store.domain, tree)

        async def attempt() -> tuple[int, int]:
            if await self._anchored(tree, backend.target):  # queued again by a new term while it was sent
                return tree.first_seq, tree.last_seq
            anchor = await backend.anchor(root)
            crash_point("anchor-sent")
            await self.store.record_anchor(tree, backend.target, anchor_json(anchor), time.time_ns())
            return tree.first_seq, tree.last_seq

        await self._until_done(backend.target, tree, attempt)

    async def _until_done(
        self, target: str, tree: TreeRecord, attempt: Callable[[], Awaitable[tuple[int, int]]]
    ) -> None:
        """Retry ``attempt`` (which anchors and records; it answers the seqs it settled) with backoff while leading."""
        delay = 0.05
        while self.leadership.leads():
            t0 = time.perf_counter()
            try:
                first, last = await attempt()
            except ServiceError as exc:
                await self._anchor_failed(target, tree, delay, str(exc))
            except Exception as exc:  # a backend bug: log it fully, keep the job open, retry
                log.exception("anchor backend %s raised", target)
                await self._anchor_failed(target, tree, delay, f"{type(exc).__name__}: {exc}")
            else:
                self.metrics.anchor_seconds.labels(target).observe(time.perf_counter() - t0)
                self.waiters.wake_range(first, last)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)

    async def _anchor_failed(self, target: str, tree: TreeRecord, delay: float, error: str) -> None:
        self.metrics.anchor_failures.labels(target).inc()
        log.warning("anchoring %s/%s to %s failed, retrying in %.2fs: %s", *_key(tree), target, delay, error)
        with contextlib.suppress(ServiceError):
            await self.store.record_anchor_failure(tree, target, error)

    # ------------------------------------------------------------------ retention

    async def _retention(self) -> None:
        assert self.retention_seconds is not None
        period = min(3600.0, max(1.0, self.retention_seconds / 10))
        while True:
            if self.leadership.leads():  # one instance purges
                with contextlib.suppress(ServiceError):
                    removed = await self.store.purge(time.time_ns() - int(self.retention_seconds * 1e9))
                    if removed:
                        log.info("retention: removed %d receipts", removed)
            await asyncio.sleep(period)


def _extend(frontier: list[bytes], size: int, leaves: Sequence[bytes]) -> list[bytes]:
    for leaf in leaves:
        frontier = frontier_append(frontier, size, leaf)
        size += 1
    return frontier


def _key(tree: TreeRecord) -> tuple[str, int]:
    return tree.window_id, tree.tree_index
