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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from itertools import accumulate

from receipt_verifier import proof_id as pid
from receipt_verifier.heads import IndexedHeads
from receipt_verifier.history import frontier_append, frontier_root, record_leaf
from receipt_verifier.model import Anchor

from .anchors import AnchorBackend, BatchedBackend, ChainedBackend, anchor_json
from .chain import heads_after, indexed_heads, window_trees
from .crashpoints import crash_point
from .errors import CorruptRecordError, LeaseLostError, ServiceError
from .ids import TICKS_PER_US, ceil_us, ticks_iso
from .ledger import tree_root
from .metrics import Metrics
from .stores.base import Store, StoredBatch, SubjectHead, TreeRecord
from .trees import PackedTree, TreeBuilder, commitments

log = logging.getLogger("receipt_service.windows")

MAX_TREES_PER_WINDOW = 40


def tree_records(window_id: str, first_seq: int, trees: Sequence[PackedTree], start: str, end: str) -> list[TreeRecord]:
    """Pure: the records of a window's consecutive trees, starting at ``first_seq``."""
    out = []
    for index, tree in enumerate(trees):
        out.append(TreeRecord(window_id, index, first_seq, first_seq + tree.size - 1, tree.root, start, end))
        first_seq += tree.size
    return out


class Waiters:
    """Futures keyed by submission ``seq``, woken when that submission's tree changes state."""

    def __init__(self) -> None:
        self._by_seq: dict[int, list[asyncio.Future[None]]] = {}

    def register(self, seq: int) -> asyncio.Future[None]:
        """A future set on the next change to ``seq``'s tree."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_seq.setdefault(seq, []).append(fut)
        return fut

    def discard(self, seq: int, fut: asyncio.Future[None]) -> None:
        """Forget a future (after a timeout)."""
        futs = self._by_seq.get(seq)
        if futs is not None:
            with contextlib.suppress(ValueError):
                futs.remove(fut)
            if not futs:
                del self._by_seq[seq]

    def wake_range(self, first: int, last: int) -> None:
        """Wake every waiter for seqs in ``first..last``."""
        if not self._by_seq:
            return
        if last - first + 1 > len(self._by_seq):
            seqs = [s for s in self._by_seq if first <= s <= last]
        else:
            seqs = [s for s in range(first, last + 1) if s in self._by_seq]
        for s in seqs:
            for fut in self._by_seq.pop(s):
                if not fut.done():
                    fut.set_result(None)


class TreeCache:
    """Recently built or loaded trees, so receipts do not rebuild them."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], PackedTree] = OrderedDict()

    def get(self, key: tuple[str, int]) -> PackedTree | None:
        """A cached tree (marked recently used)."""
        tree = self._items.get(key)
        if tree is not None:
            self._items.move_to_end(key)
        return tree

    def put(self, key: tuple[str, int], tree: PackedTree) -> None:
        """Cache a tree, evicting the least recently used."""
        self._items[key] = tree
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class Aggregator:
    """Owns the window clock and the anchor workers of one lane of a service instance.

    On a store shared by several instances only the leader (``store.lead()``) closes windows
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
        self.leading = False
        self._term: int | None = None  # the store's term of this instance's lead (None: another leads)
        self._lead_until: float | None = None  # monotonic time the lead lapses unless confirmed again
        self._lapsed = False  # the lead lapsed (not lost to another instance): its work waits for the next term
        self._epoch = 0  # counts this instance's terms (a lapse then the same token again is a new term too)
        self._term_lock = asyncio.Lock()  # a new term's read of open jobs and a window's commit never interleave
        self._drain_led = False  # a drain began while leading (or lapsed): it may lead on until its work is done
        self._requeue = False  # a commit failed and may have landed: the next check queues the open jobs again
        self._sending: dict[str, set[tuple[str, int]]] = {t: set() for t in self.backends}  # trees in flight
        self._lead_lock = asyncio.Lock()  # one lease check at a time: the clock's and the lease task's
        self.lease_check_seconds = 1.0  # how often a follower asks for the lease (and a leader renews it)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the lead if free (resuming open anchor jobs left by a previous leader), then start the
        clock, the workers and the watch on other instances' changes."""
        await self._check_lead()
        for target, backend in self.backends.items():
            workers = 1 if isinstance(backend, ChainedBackend) else max(1, backend.concurrency)  # a chain: in order
            for i in range(workers):  # workers share the target's queue
                self._tasks.append(asyncio.create_task(self._anchor_worker(target), name=f"anchor-{target}-{i}"))
        self._tasks.append(asyncio.create_task(self._clock(), name="window-clock"))
        self._tasks.append(asyncio.create_task(self._lease(), name="lease"))
        self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        if self.retention_seconds is not None:
            self._tasks.append(asyncio.create_task(self._retention(), name="retention"))

    async def drain(self, timeout: float) -> bool:
        """Close the open window and anchor everything; True when nothing this instance led was left open.

        A lead held (or lapsed) when the drain began is kept, renewed and taken again until its last window
        is closed and its open anchors are sent; then the lease task stops and the lead is handed over. No
        other lead is taken; a lead that moves to another instance leaves the rest to it."""
        self._stopping.set()
        self._drain_led = self.leading or self._lapsed
        deadline = time.monotonic() + timeout
        closed, failed, retry_at = not self._drain_led, 0, 0.0
        try:
            while True:
                if not closed and self._leads() and time.monotonic() >= retry_at:
                    try:
                        await asyncio.wait_for(self.close_window(), max(0.0, deadline - time.monotonic()))
                        closed = True
                    except (TimeoutError, ServiceError) as exc:
                        if not failed:
                            log.warning("drain: the last window is not closed yet (tried again while it may): %s", exc)
                        failed += 1
                        retry_at = time.monotonic() + min(0.5, 0.05 * 2**failed)
                if not self._drain_led:  # the lead moved to another instance: it closes and anchors the rest
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
                    await self._hand_over()
                    return False
                await asyncio.sleep(0.01 if busy else 0.05)
            await self._hand_over()
        except ServiceError as exc:
            log.error("drain stopped early: %s", exc)
            with contextlib.suppress(ServiceError):
                await self._hand_over()
            return False
        except Exception:  # a bug: in full; the lead is handed over all the same
            log.exception("drain stopped early")
            with contextlib.suppress(ServiceError):
                await self._hand_over()
            return False
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.to_thread(self.builder.close)
        return closed  # False: the lead moved away before the last window closed (its new leader closes it)

    async def _open_jobs(self) -> list[tuple[TreeRecord, str]]:
        """The store's open anchor jobs of this instance's targets."""
        return [j for j in await self.store.open_anchor_jobs() if j[1] in self._queues]

    async def _hand_over(self) -> None:
        """Stop the lease checks, then give the lead up (a check after the resign would take it again)."""
        for task in self._tasks:
            if task.get_name() == "lease":
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        async with self._lead_lock:
            if self._drain_led or self.leading:
                await self.store.resign()
            self.leading, self._term, self._lead_until, self._drain_led = False, None, None, False

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
            if not self._leads():
                continue
            try:
                await self.close_window()
            except LeaseLostError as exc:
                log.warning("%s", exc)
                with contextlib.suppress(ServiceError):  # the store failing now: the lease task says so and retries
                    await self._check_lead()
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

    async def _lease(self) -> None:
        failed, since = 0, 0.0  # one warning per outage (checks run every second), one line when it ends
        while True:
            await asyncio.sleep(self.lease_check_seconds)
            if self._stopping.is_set() and not self._drain_led:  # draining: only a lead it held goes on
                return
            try:
                await self._check_lead()
            except ServiceError as exc:
                if not failed:
                    since = time.monotonic()
                    log.warning("lease check failed (retrying every %gs, quietly): %s", self.lease_check_seconds, exc)
                failed += 1
                self._lapse_if_unconfirmed()
                continue
            except Exception:  # a bug, not an outage: in full, and the checks go on
                log.exception("lease check failed")
                self._lapse_if_unconfirmed()
                continue
            if failed:
                took = time.monotonic() - since
                log.warning("lease check works again after %d failed attempt(s) over %.1fs", failed, took)
                failed = 0

    async def _check_lead(self) -> None:
        """Take, keep or lose the lead; a new term (a takeover, or this instance's lease run out and
        taken again) reads the lane's state again and resumes every open anchor job."""
        async with self._lead_lock:
            await self._check_lead_once()

    async def _check_lead_once(self) -> None:
        asked = time.monotonic()
        term = await self.store.lead()
        lease = self.store.lease_seconds
        until = None if term is None or lease is None else asked + lease  # no later than the store's expiry
        lane = self.store.domain or "v1"
        if term is None:
            if self.leading:
                log.warning("lane %s: another instance leads now; this one only serves", lane)
            if self._drain_led:
                log.info("lane %s: draining, the lead moved to another instance, which resumes open anchors", lane)
            self.leading, self._term, self._lead_until, self._lapsed, self._drain_led = False, None, None, False, False
            return
        if self.leading and term == self._term:  # renewed
            self._lead_until = until
            self._lapse_if_unconfirmed()  # an answer later than the lease it asked for confirms nothing
            if self._requeue and self.leading and not self._term_lock.locked():  # not behind a slow commit
                async with self._term_lock:
                    try:
                        self._queue_open(await self.store.open_anchor_jobs())
                        self._requeue = False
                    except ServiceError as exc:  # the lease is renewed all the same; tried at the next check
                        log.warning("lane %s: open anchor jobs not read yet (tried at the next check): %s", lane, exc)
            return
        if self._stopping.is_set() and not self._drain_led:  # a drain takes no lead it did not hold
            with contextlib.suppress(ServiceError):
                await self.store.resign()
            return
        async with self._term_lock:  # a new term: a takeover, or the lead taken again after a lapse
            try:
                jobs = await self.store.open_anchor_jobs()
            except BaseException as exc:  # not led until a check reads them: the next one is a new term again
                self.leading, self._term, self._lead_until = False, None, None
                if isinstance(exc, ServiceError):  # and the lease is handed over meanwhile: another may read them
                    with contextlib.suppress(ServiceError):
                        await self.store.resign()
                raise
            was = self.leading or self._lapsed
            self._heads = None  # another leader may have moved the heads
            self._prev_end = None
            self._epoch += 1  # a window built before this is not committed (see _close_window)
            self._queue_open(jobs)
            self._requeue = False
            self.leading, self._term, self._lead_until, self._lapsed = True, term, until, False
        if was:
            log.warning("lane %s: the lead was taken again (a new term); state read again from the store", lane)
        elif self._tasks:  # a takeover, not the start of a single instance
            log.info("lane %s: this instance leads now (closes windows, sends anchors)", lane)
        self._lapse_if_unconfirmed()

    def _queue_open(self, jobs: Sequence[tuple[TreeRecord, str]]) -> None:
        """Queue exactly the store's open anchor jobs, oldest first (none twice, none in flight)."""
        for q in self._queues.values():
            while not q.empty():
                q.get_nowait()
        for tree, target in sorted(jobs, key=lambda j: j[0].first_seq):
            if target not in self._queues:
                log.warning("tree %s/%s waits for target %s, which is not configured", *_key(tree), target)
            elif _key(tree) not in self._sending[target]:  # one being sent is not sent twice at once
                self._queues[target].put_nowait(tree)

    def _leads(self) -> bool:
        """Whether this instance leads now: its lead not lost, nor past the lease it last obtained (then it
        lapses here and now, so the next confirmed check is a new term that reads the open jobs again)."""
        self._lapse_if_unconfirmed()
        return self.leading

    def _lapse_if_unconfirmed(self) -> None:
        """Stop leading once the store has not confirmed the lead for as long as its lease lasts (an
        outage or a partition): by then another instance may lead."""
        if self.leading and self._lead_until is not None and time.monotonic() > self._lead_until:
            self.leading, self._term, self._lead_until, self._lapsed = False, None, None, True
            log.warning(
                "lane %s: the store has not confirmed the lead within its lease (%gs); this instance stops"
                " closing windows and sending anchors until it does",
                self.store.domain or "v1",
                self.store.lease_seconds,
            )

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
                term, epoch = self._term, self._epoch  # the window is built on this term's state, committed in it
                if self.store.lease_seconds is not None and (term is None or not self.leading):
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
                    async with self._term_lock:  # no new term reads the open jobs between this commit and its queueing
                        if self.store.lease_seconds is not None and (self._epoch != epoch or not self._leads()):
                            raise LeaseLostError(
                                f"lane {self.store.domain or 'v1'}: the lead changed while the window was built;"
                                " it is built again"
                            )
                        try:
                            await self.store.commit_window(records, list(self.backends), changed, term=term)
                        except LeaseLostError:
                            raise
                        except ServiceError:  # it may have committed (a lost reply, replicas late): the next
                            self._requeue = True  # check queues whatever is open again, this window too
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
            if self._term == term:  # kept only in the term it was read in (a new term may have begun meanwhile)
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
                    if self._leads():
                        await self._empty_window(backend, queue, idle)
                    continue
            if not self._leads() or _key(tree) in self._sending[target]:
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
        while self._leads():
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
            if self._leads():  # one instance purges
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
