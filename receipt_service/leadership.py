"""Leadership of a lane on a store shared by several instances: terms, lapses and the hand-over.

Only the lane's leader closes windows and sends anchors. The store grants the lead as a lease whose
answer is a fencing token (``Store.lead()``); a window is committed only under the token it was built
under. Every new term (a takeover, or this instance's own lead taken again after a lapse) reads the
lane's open anchor jobs again before it leads, so nothing another leader left open is forgotten.
A lead the store has not confirmed for as long as its lease lasts lapses: by then another instance may
lead. A draining leader keeps its lead until its last window is closed and anchored, then hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from .errors import ServiceError
from .stores.base import Store, TreeRecord

log = logging.getLogger(__name__)

#: Queues the store's open anchor jobs; ``True`` when a new term begins (the lane's cached state is stale).
Resume = Callable[[Sequence[tuple[TreeRecord, str]], bool], None]


class Leadership:
    """One instance's lead of one lane: taken, renewed, lapsed and handed over against ``store``."""

    def __init__(self, store: Store, stopping: asyncio.Event, resume: Resume) -> None:
        self.store = store
        self._stopping = stopping  # set when the instance drains
        self._resume = resume
        self.leading = False
        self.term: int | None = None  # the store's term of this instance's lead (None: another leads)
        self.until: float | None = None  # monotonic time the lead lapses unless confirmed again
        self.lapsed = False  # the lead lapsed (not lost to another instance): its work waits for the next term
        self.epoch = 0  # counts this instance's terms (a lapse then the same token again is a new term too)
        self.term_lock = asyncio.Lock()  # a new term's read of open jobs and a window's commit never interleave
        self.draining = False  # a drain began while leading (or lapsed): it may lead on until its work is done
        self.requeue = False  # a commit failed and may have landed: the next check queues the open jobs again
        self.check_seconds = 1.0  # how often a follower asks for the lease (and a leader renews it)
        self.check_wait_seconds = 1.0  # how long a hand-over waits for a check under way to finish
        self._lock = asyncio.Lock()  # one lease check at a time: the clock's and the lease task's
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None  # lapses the lead at ``until`` (a check may hang)

    @property
    def _lane(self) -> str:
        return self.store.domain or "v1"

    def start(self) -> None:
        """Start the lease checks (every ``check_seconds``)."""
        self._task = asyncio.create_task(self._run(), name="lease")

    async def stop(self) -> None:
        """Stop the lease checks (the lead is kept until the store's lease runs out)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def begin_drain(self) -> bool:
        """The instance drains (``stopping`` is set): whether it held a lead (or had it lapse) to finish."""
        self.draining = self.leading or self.lapsed
        return self.draining

    async def hand_over(self) -> None:
        """Stop the lease checks, then give the lead up (a check after the resign would take it again).

        A check under way is let finish first, for up to ``check_wait_seconds``, so its answer does not
        land after the resign; a longer one is cut off (a command already on its way to the store may
        still land later: the lease then runs out unrenewed). Another task's check (the clock's) is waited
        for as long again, then the hand-over goes on without it. A follower resigns too, briefly: a check
        cut off or failed may have been granted the lease unknowingly. A store that cannot be asked keeps
        the lease until it runs out; the hand-over says so and ends all the same."""
        locked = await self._acquire(self.check_wait_seconds)
        if not locked:
            await self.stop()
            locked = await self._acquire(self.check_wait_seconds)
        try:
            await self.stop()
            held = self.draining or self.leading
            try:
                async with asyncio.timeout(None if held else self.check_wait_seconds):
                    await self.store.resign()
            except (ServiceError, TimeoutError) as exc:
                if held:
                    log.warning(
                        "lane %s: the lead is not handed over; the next leader takes it when its lease runs out"
                        " (within %gs): %s",
                        self._lane,
                        self.store.lease_seconds,
                        exc,
                    )
        finally:
            self.leading, self.term, self.until, self.draining = False, None, None, False
            self._arm()
            if locked:
                self._lock.release()

    async def _acquire(self, seconds: float) -> bool:
        """Take the lease checks' lock within ``seconds``; whether it was taken."""
        try:
            async with asyncio.timeout(seconds):
                await self._lock.acquire()
        except TimeoutError:
            return False
        return True

    def leads(self) -> bool:
        """Whether this instance leads now: its lead not lost, nor past the lease it last obtained (then it
        lapses here and now, so the next confirmed check is a new term that reads the open jobs again)."""
        self.lapse_if_unconfirmed()
        return self.leading

    def lapse_if_unconfirmed(self) -> None:
        """Stop leading once the store has not confirmed the lead for as long as its lease lasts (an
        outage or a partition): by then another instance may lead."""
        if self.leading and self.until is not None and time.monotonic() > self.until:
            self.leading, self.term, self.until, self.lapsed = False, None, None, True
            log.warning(
                "lane %s: the store has not confirmed the lead within its lease (%gs); this instance stops"
                " closing windows and sending anchors until it does",
                self._lane,
                self.store.lease_seconds,
            )

    def _arm(self) -> None:
        """Lapse the lead at ``until`` even if nothing asks meanwhile (a check hanging on the store), so
        the ``leading`` gauge and the log tell the truth; every user of the lead checks it as well."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.leading and self.until is not None:
            delay = self.until - time.monotonic() + 0.001  # just past it: a timer may fire a little early
            self._deadline = asyncio.get_running_loop().call_later(max(0.0, delay), self.lapse_if_unconfirmed)

    async def check(self) -> None:
        """Take, keep or lose the lead; a new term (a takeover, or this instance's lease run out and
        taken again) resumes every open anchor job before it leads."""
        async with self._lock:
            await self._check_once()

    async def _check_once(self) -> None:
        asked = time.monotonic()
        term = await self.store.lead()
        lease = self.store.lease_seconds
        until = None if term is None or lease is None else asked + lease  # no later than the store's expiry
        if term is None:
            if self.leading:
                log.warning("lane %s: another instance leads now; this one only serves", self._lane)
            if self.draining:
                log.info(
                    "lane %s: draining, the lead moved to another instance, which resumes open anchors", self._lane
                )
            self.leading, self.term, self.until, self.lapsed, self.draining = False, None, None, False, False
            return
        if self.leading and term == self.term:  # renewed
            self.until = until
            self._arm()
            self.lapse_if_unconfirmed()  # an answer later than the lease it asked for confirms nothing
            if self.requeue and self.leading and not self.term_lock.locked():  # not behind a slow commit
                async with self.term_lock:
                    try:
                        self._resume(await self.store.open_anchor_jobs(), False)
                        self.requeue = False
                    except ServiceError as exc:  # the lease is renewed all the same; tried at the next check
                        log.warning(
                            "lane %s: open anchor jobs not read yet (tried at the next check): %s", self._lane, exc
                        )
            return
        if self._stopping.is_set() and not self.draining:  # a drain takes no lead it did not hold
            with contextlib.suppress(ServiceError):
                await self.store.resign()
            return
        async with self.term_lock:  # a new term: a takeover, or the lead taken again after a lapse
            try:
                jobs = await self.store.open_anchor_jobs()
            except BaseException as exc:  # not led until a check reads them: the next one is a new term again
                self.leading, self.term, self.until = False, None, None
                if isinstance(exc, ServiceError):  # and the lease is handed over meanwhile: another may read them
                    with contextlib.suppress(ServiceError):
                        await self.store.resign()
                raise
            was = self.leading or self.lapsed
            self.epoch += 1  # a window built before this is not committed (see Aggregator._close_window)
            self._resume(jobs, True)
            self.requeue = False
            self.leading, self.term, self.until, self.lapsed = True, term, until, False
            self._arm()
        if was:
            log.warning("lane %s: the lead was taken again (a new term); state read again from the store", self._lane)
        elif self._task is not None:  # a takeover, not the start of a single instance
            log.info("lane %s: this instance leads now (closes windows, sends anchors)", self._lane)
        self.lapse_if_unconfirmed()

    async def _run(self) -> None:
        failed, since = 0, 0.0  # one warning per outage (checks run every second), one line when it ends
        while True:
            await asyncio.sleep(self.check_seconds)
            if self._stopping.is_set() and not self.draining:  # draining: only a lead it held goes on
                return
            try:
                await self.check()
            except ServiceError as exc:
                if not failed:
                    since = time.monotonic()
                    log.warning("lease check failed (retrying every %gs, quietly): %s", self.check_seconds, exc)
                failed += 1
                self.lapse_if_unconfirmed()
                continue
            except Exception:  # a bug, not an outage: in full, and the checks go on
                log.exception("lease check failed")
                self.lapse_if_unconfirmed()
                continue
            if failed:
                took = time.monotonic() - since
                log.warning("lease check works again after %d failed attempt(s) over %.1fs", failed, took)
                failed = 0
