"""The hand-over of a lane's lead at a drain (``Leadership``): the work finished first, the lease given up, and
what is said when it cannot be, against real stores (SQLite, redis-server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from receipt_service.errors import StoreError
from receipt_service.leadership import Leadership
from receipt_service.metrics import Metrics
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.windows import Aggregator

from .aggregation import (
    Lead,
    LostAnswer,
    Recorder,
    Slow,
    _batch,
    _until,
    running,
)


async def test_a_drain_keeps_the_lead_until_its_work_is_anchored(tmp_path: Path) -> None:
    """Anchoring the last trees takes longer than the lease: the lead is renewed while draining (found by a
    third review: workers dropped the rest once the lease passed, and the drain said all was anchored)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 1.0
    rec = Slow(0.1)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, max_leaves=1)
    agg.leadership.check_seconds = 0.05
    await agg.start()
    try:
        for _ in range(15):
            await store.add_batch(_batch(1))
        assert await agg.drain(20)  # closes the window of 15 one-leaf trees, anchors them one after another
        assert len(rec.roots) == 15 and await store.open_anchor_jobs() == []
        assert lead.resigned == 1
    finally:
        await store.close()


async def test_a_drain_that_begins_lapsed_takes_its_lead_again_and_finishes(tmp_path: Path) -> None:
    """The lead had lapsed when the drain began, and its worker dropped the queued tree: the drain renews
    the lead (a new term reads the open job again) and anchors it before it says it is done (found by a
    fourth review: it said done with the job open, and kept the lease)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    rec = Recorder(bug=10**6)  # fails until told otherwise
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    agg.leadership.check_seconds = 0.05
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        await agg.close_window()
        lead.down = True
        await _until(lambda: not agg.leading and not agg._sending["rec-1"])  # lapsed; the tree dropped
        rec.bug = 0
        drained = asyncio.create_task(agg.drain(10))
        await asyncio.sleep(0.2)  # the drain began lapsed
        lead.down = False
        assert await drained
        assert len(rec.roots) == 1 and await store.open_anchor_jobs() == [] and lead.resigned == 1
    finally:
        await store.close()


async def test_a_drain_that_runs_out_of_time_hands_the_lead_over_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A target that keeps failing: the drain ends at its deadline, says what is left, and hands the lead
    over so the next leader need not wait out the lease (found by a fifth review)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder(bug=10**6)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    caplog.set_level(logging.WARNING, logger="receipt_service")
    await agg.start()
    try:
        await store.add_batch(_batch(1))
        assert not await agg.drain(0.5)
        assert lead.resigned == 1 and not agg.leading
        assert "drain: 1 anchor(s) being sent, 0 job(s) open; the next leader resumes them" in caplog.text
    finally:
        await store.close()


async def test_a_drain_whose_last_commit_fails_to_answer_finishes_its_work(tmp_path: Path) -> None:
    """The drain's last window commits but its answer fails: the drain goes on (the window is found
    committed, its anchors queued at the next check) and hands the lead over (a sixth review: it stopped at
    once, with the job open and the lease kept)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.05
    lost = LostAnswer(lead, store, "the reply was lost")
    await agg.start()
    try:
        await store.add_batch(_batch(2))
        assert await agg.drain(10)
        assert lost.count == 1 and len(rec.roots) == 1 and await store.open_anchor_jobs() == []
        assert lead.resigned == 1
    finally:
        await store.close()


async def test_a_drain_that_begins_lapsed_closes_the_last_window_too(tmp_path: Path) -> None:
    """Hashes wait in the backlog and the lead had lapsed when the drain began: once the lead is taken
    again the drain closes the window and anchors it (a sixth review: it anchored the open jobs only)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.05
    await agg.start()
    try:
        lead.down = True
        await _until(lambda: not agg.leading)
        await store.add_batch(_batch(3))
        drained = asyncio.create_task(agg.drain(10))
        await asyncio.sleep(0.2)
        lead.down = False
        assert await drained
        assert (await store.stats()).backlog == 0 and len(rec.roots) == 1 and rec.roots[0].tree_size == 3
    finally:
        await store.close()


async def test_a_drain_whose_lead_moves_away_before_its_last_window_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last window cannot be closed and the lead moves to another instance: the drain leaves it to
    that instance and says it did not close it (a seventh review: it said every window was closed)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.05
    await agg.start()

    async def broken(limit: int, upto: int | None = None) -> list[Any]:
        lead.leading = False  # meanwhile another instance took the lease
        raise StoreError("disk on fire")

    lead.backlog = broken
    caplog.set_level(logging.INFO, logger="receipt_service")
    try:
        assert not await agg.drain(5)
        assert "draining, the lead moved to another instance, which resumes open anchors" in caplog.text
        assert "the next leader resumes them" not in caplog.text  # it stopped there, not at its deadline
    finally:
        await store.close()


@pytest.fixture
async def two_instances(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two instances' stores on one redis-server, with a 60 s lease (longer than any test waits)."""
    stores = (
        RedisStore(RedisLink(RedisTarget.parse(redis_url)), lease_seconds=60),
        RedisStore(RedisLink(RedisTarget.parse(redis_url)), lease_seconds=60),
    )
    yield stores
    for store in stores:
        await store.link.close()


async def test_a_follower_stopped_mid_check_hands_over_a_lease_it_was_just_granted(
    two_instances: tuple[RedisStore, RedisStore],
) -> None:
    """Redis grants a follower's check the lease, and the answer never comes back: the hand-over cuts the
    check off and gives that lease up, so the other instance leads at once, not a whole lease later (real
    redis-server)."""
    sa, sb = two_instances
    assert await sb.lead() is not None
    lead = Leadership(sa, asyncio.Event(), lambda jobs, new_term: None)
    lead.check_seconds, lead.check_wait_seconds = 0.01, 0.1
    run, granted = sa.link.run, asyncio.Event()

    async def slow_answer(name: str, keys: Any, args: Any, **kw: Any) -> Any:
        out = await run(name, keys, args, **kw)
        if name == "lead" and out[0]:
            granted.set()
            await asyncio.Event().wait()  # the answer is on its way when the drain stops the checks
        return out

    sa.link.run = slow_answer
    lead.start()
    await sb.resign()  # b stops: a's next check is granted the lease
    await asyncio.wait_for(granted.wait(), 5)
    assert not lead.leading
    await lead.hand_over()
    assert await sb.lead() is not None, "the follower kept the lease it was granted while stopping"


async def test_a_drain_whose_resign_fails_still_says_its_work_is_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything is closed and anchored, then the store cannot be asked to take the lease back: the drain
    reports its work done (it is), and says the next leader waits for the lease to run out."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 5.0

    async def down() -> None:
        raise StoreError("redis went away")

    lead.resign = down
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store):  # the drain must say done
        await store.add_batch(_batch(1))
    assert len(rec.roots) == 1 and not agg.leading
    assert "the lead is not handed over; the next leader takes it when its lease runs out (within 5s)" in caplog.text


async def test_a_check_on_its_way_when_the_lead_is_handed_over_cannot_take_it_again(
    two_instances: tuple[RedisStore, RedisStore],
) -> None:
    """A draining leader's renewal is on its way to Redis when it hands the lead over: the hand-over waits
    for it, so the renewal cannot land after the resign and hold the lane for a whole lease (found by a
    review, with this reproducer: the resign went on another connection and landed first)."""
    sa, sb = two_instances
    stopping = asyncio.Event()
    lead = Leadership(sa, stopping, lambda jobs, new_term: None)
    await lead.check()
    assert lead.leading
    lead.check_seconds = 0.01
    run, on_its_way = sa.link.run, asyncio.Event()

    async def late(name: str, keys: Any, args: Any, **kw: Any) -> Any:
        if name != "lead":
            return await run(name, keys, args, **kw)

        async def wire() -> Any:  # sent: Redis runs it a little later, whatever happens to the caller
            on_its_way.set()
            await asyncio.sleep(0.1)
            return await run(name, keys, args, **kw)

        return await asyncio.shield(asyncio.ensure_future(wire()))

    sa.link.run = late
    lead.start()
    stopping.set()
    assert lead.begin_drain()
    await asyncio.wait_for(on_its_way.wait(), 5)
    await lead.hand_over()
    await asyncio.sleep(0.2)  # a renewal cut off by the hand-over would have landed by now
    assert await sb.lead() is not None, "the stopped instance took the lease again after its resign"


async def test_a_hand_over_does_not_wait_without_bound_for_another_tasks_check(tmp_path: Path) -> None:
    """The clock's own check (after a refused commit) hangs on the store while the drain hands over: the
    hand-over waits for it no longer than its bound, then gives the lead up all the same (found by a
    review: it waited as long as the check did)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    answer = asyncio.Event()

    async def hanging() -> int:
        await answer.wait()
        return lead.term

    stopping = asyncio.Event()
    leadership = Leadership(lead.as_store(), stopping, lambda jobs, new_term: None)
    leadership.check_wait_seconds = 0.1
    lead.lead = hanging
    clock_check = asyncio.create_task(leadership.check())  # not the lease task: the hand-over cannot cut it off
    await asyncio.sleep(0.01)
    stopping.set()
    try:
        await asyncio.wait_for(leadership.hand_over(), 5)  # fifty times its bound
        assert lead.resigned == 1 and not leadership.leading
    finally:
        answer.set()
        await clock_check
        await store.close()
