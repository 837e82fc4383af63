"""Leadership of a lane: terms, lapses and takeovers, against real stores (the hand-over at a drain:
``test_handover.py``)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from receipt_service.chain import indexed_heads
from receipt_service.errors import LeaseLostError, StoreError
from receipt_service.ids import ProofIdIssuer
from receipt_service.metrics import Metrics
from receipt_service.stores.base import Batch
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.windows import MAX_TREES_PER_WINDOW, Aggregator

from .aggregation import (
    DOMAIN,
    A,
    B,
    FailingCommit,
    FlakyTarget,
    Gated,
    Lead,
    LostAnswer,
    Recorder,
    _batch,
    _eventually,
    _heads_of,
    _no_open_job,
    _open_job_from,
    _until,
    running,
)


async def test_the_lead_decides_who_closes_and_anchors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store, leading=False)
    rec = Recorder(concurrency=2)
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.02)
    agg.leadership.check_seconds = 0.02
    caplog.set_level(logging.INFO, logger="receipt_service")
    async with running(agg, store):
        names = sorted(t.get_name() for t in agg._tasks)
        assert names == ["anchor-rec-1-0", "anchor-rec-1-1", "watch", "window-clock"]
        assert agg.leadership._task is not None and agg.leadership._task.get_name() == "lease"
        await store.add_batch(_batch(2))
        await asyncio.sleep(0.15)
        assert not agg.leading and rec.roots == [] and await store.backlog(10) != []  # a follower closes nothing
        lead.leading = True
        await _until(lambda: len(rec.roots) == 1)
        assert "lane v1: this instance leads now (closes windows, sends anchors)" in caplog.text
        # a window committed while leading, whose anchor is still open when the lead moves away
        rec.bug = 10**6
        await store.add_batch(_batch(1))
        await _eventually(lambda: _open_job_from(store, 3))
        lead.leading = False
        await _until(lambda: not agg.leading)
        assert caplog.text.count("lane v1: another instance leads now; this one only serves") == 1
        assert caplog.text.count("lane v1: this instance leads now") == 1  # logged on a change, not at every check
        rec.bug = 0
        (open_tree,) = [t for t, _ in await store.open_anchor_jobs()]
        for _ in range(2):  # a job that reaches a follower's queue is dropped; both workers live on
            agg._queues["rec-1"].put_nowait(open_tree)
        await asyncio.sleep(0.1)
        assert len(rec.roots) == 1  # a follower never sends an anchor
        lead.leading = True  # it leads again: the open job is resumed from the store
        await _until(lambda: len(rec.roots) == 2)
        assert rec.roots[1].tree_size == 1
    assert lead.resigned == 1  # a leader that drained hands the lead over


async def test_the_clock_closes_windows_and_a_lost_lease_is_rechecked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="receipt_service")
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.05)
    agg.leadership.check_seconds = 3600
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: len(rec.roots) == 1)  # closed by the clock, not by the test
        calls = 0
        real = store.commit_window

        async def lost(*args: Any, **kw: Any) -> None:
            nonlocal calls
            calls += 1
            lead.leading = False
            raise LeaseLostError("another instance took the lead")

        lead.commit_window = lost
        await store.add_batch(_batch(1))
        await _until(lambda: calls == 1)
        await _until(lambda: not agg.leading)  # the clock asked the store at once, not at the next lease check
        lead.commit_window = real
        await asyncio.sleep(0.2)
        assert calls == 1  # a follower's clock closes nothing
        assert "another instance took the lead" in caplog.text
        lead.leading = True
        await agg.leadership.check()

        async def broken(limit: int, upto: int | None = None) -> list[Any]:
            raise StoreError("disk on fire")

        lead.backlog = broken
        quiet = (
            "lane v1: window not closed (its hashes stay in the backlog; retrying every 0.05s, quietly): disk on fire"
        )
        await _until(lambda: quiet in caplog.text)  # an outage of the store: said once, without a traceback
        del lead.backlog


async def test_a_lease_run_out_and_taken_again_is_a_new_term(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The lease ran out in a Redis outage; the lease task took it again (a new fencing token) while a window
    was on its way under the old one, and another leader may have closed windows in between. The old
    window is refused; the instance goes on leading, reads the lane again (the other leader's heads and open
    anchors) and its clock survives a store that fails at the recheck."""
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead, other = Lead(store), Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.05)
    agg.leadership.check_seconds = 0.05
    between = Aggregator(other.as_store(), [Recorder()], Metrics(), window_seconds=3600)  # leads between the terms
    caplog.set_level(logging.WARNING, logger="receipt_service")
    real_commit, real_lead = store.commit_window, lead.lead
    sent: list[Batch] = []
    async with running(agg, store):
        sent.append(_batch(2, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 1)
        refused = 0

        async def fenced(trees: Any, targets: Any, heads: Any = (), *, term: int | None = None) -> None:
            nonlocal refused
            if refused == 0:  # the other leader closes this window; this instance then takes the lease again
                await between.close_window()
                lead.term += 2
            if agg.leadership.term != lead.term:  # the store compares the fencing token
                refused += 1
                raise LeaseLostError("lane v1: this instance no longer leads the lane; another instance took over")
            await real_commit(trees, targets, heads, term=term)

        failures = 0

        async def failing_once() -> int | None:
            nonlocal failures
            failures += 1
            if failures == 1:  # the recheck right after the refusal meets the store failing
                raise StoreError("redis went away")
            return await real_lead()

        lead.commit_window, lead.lead = fenced, failing_once
        sent.append(_batch(1, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 2)  # the other leader's window: its open anchor resumed here
        assert agg.leading and agg.leadership.term == 3
        assert rec.roots[1].heads_root == _heads_of(sent).root.hex()
        sent.append(_batch(3, A))
        await store.add_batch(sent[-1])
        await _until(lambda: len(rec.roots) == 3)  # the clock lived on; its window goes on from the other's heads
        assert rec.roots[2].heads_root == _heads_of(sent).root.hex()
        assert [r.tree_size for r in rec.roots] == [2, 1, 3]
    assert caplog.text.count("the lead was taken again (a new term)") == 1, caplog.text
    assert "Traceback" not in caplog.text and refused >= 1
    await between.drain(1)


async def test_a_failing_lease_check_is_logged_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    calls = 0

    async def flaky_lead() -> int:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 6 or 9 <= calls <= 10:  # the check at start succeeds; then two outages
            raise StoreError("redis went away")
        return 1

    lead.lead = flaky_lead
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.02
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store, check=False):
        await _until(lambda: calls >= 12)
        lines = [r.getMessage() for r in caplog.records]
        failed = "lease check failed (retrying every 0.02s, quietly): redis went away"
        assert lines == [failed, lines[1], failed, lines[3]], lines
        assert re.fullmatch(r"lease check works again after 5 failed attempt\(s\) over \d+\.\ds", lines[1])
        assert re.fullmatch(r"lease check works again after 2 failed attempt\(s\) over \d+\.\ds", lines[3])
        assert agg.leading


def _redis_batch(store: RedisStore, n: int, subject: str) -> Batch:
    issued = ProofIdIssuer(store.clock_seq, store.last_ticks()).issue_batch(
        [os.urandom(32) for _ in range(n)], time.time_ns()
    )
    hashes = os.urandom(32 * n)
    return Batch("t", issued.first_ticks, issued.proof_id_bytes, hashes, os.urandom(16 * n), subject)


@pytest.mark.parametrize("retaken", ["before the window", "while the window is built"])
async def test_a_window_built_in_one_term_is_never_committed_in_the_next(redis_url: str, retaken: str) -> None:
    """Instance a's lease ran out; b led, moved subject B's head and stopped; a takes the lease again. A
    window a built on its old term's cached heads would drop B's log from the heads: it is refused (found by
    a review, with this reproducer) and built again on the store's heads (real redis-server)."""
    sa = RedisStore(RedisLink(RedisTarget.parse(redis_url)), domain=DOMAIN, lease_seconds=5)
    sb = RedisStore(RedisLink(RedisTarget.parse(redis_url)), domain=DOMAIN, lease_seconds=5)
    a = Aggregator(sa, [Recorder()], Metrics(), window_seconds=3600)
    b = Aggregator(sb, [Recorder()], Metrics(), window_seconds=3600)
    try:
        await a.leadership.check()
        first = a.leadership.term
        await sa.add_batch(_redis_batch(sa, 2, A))
        await a.close_window()  # a caches the heads: {A}
        # a's lease is gone in Redis while a still counts on it (a paused process whose deadline has not
        # fired yet, a clock jump, a failover to a replica that lost the key)
        await sa.link.client.delete(sa.k("leader"))
        await b.leadership.check()
        assert b.leading
        await sb.add_batch(_redis_batch(sb, 1, B))
        await b.close_window()  # the heads: {A, B}
        await sb.resign()
        await sa.add_batch(_redis_batch(sa, 1, A))
        real = sa.commit_window
        refused = 0

        async def lease_task_lands(*args: Any, **kw: Any) -> None:
            nonlocal refused
            if not refused:
                await sa.lead()  # the lease task's check reaches Redis while the window is on its way
                refused += 1
            await real(*args, **kw)

        if retaken == "while the window is built":
            sa.commit_window = lease_task_lands
            with pytest.raises(LeaseLostError, match=r"taken again|the lead changed while the window was built"):
                await a.close_window()  # refused by the store's term, or first by the lapse of a's own lease
        await a.leadership.check()  # the clock asks at once after a refusal; the lease task would in a moment
        assert a.leadership.term is not None and first is not None and a.leadership.term > first
        await a.close_window()  # built again, on the store's heads
        last = await sa.tree_for_seq(4)
        assert last is not None and (await sa.stats()).backlog == 0
        want = indexed_heads(await sa.subject_heads())
        assert (last.heads_root, last.heads_size) == (want.root, want.size) and want.size == 3
    finally:
        await sa.link.close()
        await sb.link.close()


async def test_a_new_term_does_not_send_a_tree_in_flight_twice(tmp_path: Path) -> None:
    """Two workers on one target: the tree the first is sending is not queued again for the second when
    the lease is taken again (found by a review: it was anchored twice)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    gate = asyncio.Event()
    rec = Gated(gate)
    rec.concurrency = 2
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.02
    async with running(agg, store):
        await store.add_batch(_batch(2))
        await agg.close_window()
        await _until(lambda: len(agg._sending["rec-1"]) == 1)  # the first worker is sending the tree
        lead.term += 1  # the lease ran out and was taken again: open jobs are read again
        await _until(lambda: agg.leadership.term == lead.term)
        await asyncio.sleep(0.1)
        assert len(agg._sending["rec-1"]) == 1
        gate.set()
        await _until(lambda: len(rec.roots) == 1)
        await asyncio.sleep(0.1)
        assert len(rec.roots) == 1


async def test_a_lead_the_store_does_not_confirm_within_its_lease_lapses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the store cannot be asked, the instance leads no longer than the lease it last obtained: by
    then another may lead. It leads again once the store confirms it."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    down = False

    async def lease() -> int | None:
        if down:
            raise StoreError("redis went away")
        return lead.term if lead.leading else None

    lead.lead = lease
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=0.02)
    agg.leadership.check_seconds = 0.05
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: len(rec.roots) == 1)
        await asyncio.sleep(0.5)  # longer than the lease: each renewal confirms it for another lease
        assert agg.leading and agg.leadership.epoch == 1
        down, t0 = True, time.monotonic()
        await _until(lambda: not agg.leading)
        assert 0.2 < time.monotonic() - t0 < 1.0, "the lead lapsed about a lease after it was last confirmed"
        await store.add_batch(_batch(1))
        await asyncio.sleep(0.2)
        assert len(rec.roots) == 1  # no window closed while the lead is not confirmed
        down = False
        await _until(lambda: len(rec.roots) == 2)  # confirmed again: it leads (a new term) and closes
    assert caplog.text.count("has not confirmed the lead within its lease (0.3s)") == 1


async def test_a_lead_lapses_on_time_while_its_check_hangs(tmp_path: Path) -> None:
    """The store stops answering (a partition: the lease check hangs until its read timeout) and nothing
    else asks for the lead (windows of an hour): the lead lapses at its lease all the same, so the
    ``leading`` gauge stops saying it leads when another instance may."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    answers = asyncio.Event()
    answers.set()

    async def lease() -> int | None:
        await answers.wait()
        return lead.term

    lead.lead = lease
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.05
    async with running(agg, store):
        assert agg.leading
        answers.clear()
        t0 = time.monotonic()
        await _until(lambda: not agg.leadership.leading, timeout=3)
        assert time.monotonic() - t0 < 1.0 and agg.leadership.lapsed
        answers.set()  # the hanging check is answered: a new term
        await _until(lambda: agg.leading)
        assert agg.leadership.epoch >= 2  # a new term (the hung answer, or the next when it came too late)


async def test_a_takeover_whose_read_of_open_jobs_fails_is_taken_again(tmp_path: Path) -> None:
    """The read of the open anchor jobs fails as the instance takes over (Redis just back): it does not
    lead on without them (found by a second review: the old leader's job stayed unqueued for the term)."""
    store = SQLiteStore(tmp_path)
    old = Aggregator(Lead(store).as_store(), [Recorder()], Metrics(), window_seconds=3600)
    await old.leadership.check()
    await store.add_batch(_batch(2))
    await old.close_window()  # and dies before anchoring it: one open job
    lead = Lead(store, leading=False)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.02
    real, fails = store.open_anchor_jobs, 3

    async def flaky() -> Any:
        nonlocal fails
        if fails:
            fails -= 1
            raise StoreError("redis: timeout reading the open jobs")
        return await real()

    lead.open_anchor_jobs = flaky
    async with running(agg, store):
        lead.leading = True
        await _until(lambda: fails < 3)  # the takeover's read failed
        assert not agg.leading, "it leads without the open jobs"
        await _until(lambda: len(rec.roots) == 1)
        assert fails == 0 and agg.leading
        assert lead.resigned == 3, "the lease was handed over each time the jobs could not be read"


async def test_a_cut_window_after_the_lead_lapsed_is_not_committed(tmp_path: Path) -> None:
    """A backlog cut into two windows; the lead lapses after the first commit: the second is not built, let
    alone committed without a term (found by a second review)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 5.0
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600, max_leaves=1)
    await agg.leadership.check()
    for _ in range(MAX_TREES_PER_WINDOW + 1):  # one leaf a tree: one window of the most trees, then the rest
        await store.add_batch(_batch(1))
    real = store.commit_window
    terms: list[int | None] = []

    async def commit(*args: Any, term: int | None = None) -> None:
        terms.append(term)
        await real(*args, term=term)
        agg.leadership.until = 0.0  # the lease checks failed meanwhile: the lead lapses
        agg.leadership.lapse_if_unconfirmed()

    lead.commit_window = commit
    try:
        with pytest.raises(LeaseLostError, match="does not lead now"):
            await agg.close_window()
        assert terms == [1] and (await store.stats()).backlog == 1
    finally:
        await store.close()


async def test_a_new_term_while_subject_heads_are_built(tmp_path: Path) -> None:
    """The lease task lands a new term while a window's subject heads are built: the window is still built
    from one set of heads (a second review found a TypeError there)."""
    store = SQLiteStore(tmp_path, domain=DOMAIN)
    lead = Lead(store)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    await agg.leadership.check()
    sent = [_batch(1, A)]
    await store.add_batch(sent[0])
    real = store.subject_frontier

    async def frontier(*args: Any, **kw: Any) -> Any:
        if lead.term == 1:
            lead.term = 2
            await agg.leadership.check()
        return await real(*args, **kw)

    lead.subject_frontier = frontier
    try:
        await agg.close_window()
        (tree,) = [t for t, _ in await store.open_anchor_jobs()]
        assert tree.heads_root == _heads_of(sent).root and agg.leadership.term == 2
    finally:
        await agg.drain(1)
        await store.close()


async def test_a_lead_confirmed_late_in_the_same_term_resumes_what_its_workers_dropped(tmp_path: Path) -> None:
    """A renewal answered after the lease it asked for (same fencing token): meanwhile the worker stopped
    retrying its tree. The lapse ends the term, so the late answer begins a new one, which queues the open
    job again (found by a third review: it stayed open for as long as the instance led)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    delay = 0.0

    async def renew() -> int | None:
        await asyncio.sleep(delay)
        return lead.term if lead.leading else None

    lead.lead = renew
    target = FlakyTarget(failures=10**6)
    agg = Aggregator(lead.as_store(), [target], Metrics(), window_seconds=3600, retry_max_seconds=0.05)
    agg.leadership.check_seconds = 0.1
    async with running(agg, store):
        await store.add_batch(_batch(1))
        await agg.close_window()
        await _until(lambda: target.calls >= 2)  # the worker retries its tree
        delay = 0.45  # the next renewals answer after the lease they asked for
        await asyncio.sleep(0.6)
        target.failures, delay = 0, 0.0  # the target recovers, the store answers in time again
        await _eventually(lambda: _no_open_job(store), 10)


async def test_a_window_built_across_a_lapse_and_a_new_term_on_the_same_token_is_built_again(
    tmp_path: Path,
) -> None:
    """The lead lapses while a window is built and the next renewal answers the same token: a new term of
    this instance, whose read of the open jobs comes before the window's commit. The window is refused and
    built again, so it is queued and anchored (found by a fourth review: it was committed unqueued)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 5.0
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 3600
    real, lapses = store.backlog, 0

    async def backlog(*args: Any, **kw: Any) -> Any:
        nonlocal lapses
        if not lapses:
            lapses += 1
            agg.leadership.until = 0.0
            agg.leadership.lapse_if_unconfirmed()
            await agg.leadership.check()  # renewed with the same token: a new term
        return await real(*args, **kw)

    lead.backlog = backlog
    async with running(agg, store):
        await store.add_batch(_batch(2))
        with pytest.raises(LeaseLostError, match="the lead changed while the window was built"):
            await agg.close_window()
        assert agg.leading and lapses == 1
        await agg.close_window()
        await _until(lambda: len(rec.roots) == 1)


async def test_a_commit_whose_answer_is_lost_is_queued_at_the_next_check(tmp_path: Path) -> None:
    """The commit landed but its answer failed (a lost reply, replicas late): its batches are past the
    watermark, so no later window holds them. The next lease check queues the open jobs again, this
    window's too (found by a fifth review: it stayed open while the instance led on)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    rec = Recorder()
    agg = Aggregator(lead.as_store(), [rec], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.05
    LostAnswer(lead, store, "only 0 of 1 Redis replicas confirmed the write in time")
    async with running(agg, store):
        await store.add_batch(_batch(2))
        with pytest.raises(StoreError, match="replicas"):
            await agg.close_window()
        assert (await store.stats()).backlog == 0 and agg.leading  # committed all the same; still leading
        await _until(lambda: len(rec.roots) == 1)


async def test_a_commit_that_keeps_failing_is_said_once_and_the_lead_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses every commit (a full disk): one line when it starts, no term ends, no
    flapping of the lead (a sixth review saw a new term and a warning per failure)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    full = FailingCommit(lead, "database or disk is full")
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=0.05)
    agg.leadership.check_seconds = 0.05
    caplog.set_level(logging.INFO, logger="receipt_service")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: full.calls >= 10)
        assert agg.leading and agg.leadership.epoch == 1
    assert caplog.text.count("window not closed") == 1, caplog.text
    assert "taken again" not in caplog.text


async def test_a_slow_failing_commit_does_not_hold_the_renewals_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Commits that take twice the lease and then fail: the renewals go on meanwhile (the open jobs are
    queued again at a check when no commit is under way), so the lead never lapses (a seventh review saw
    the renewal wait behind the commit and the lead lapse)."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store)
    lead.lease_seconds = 0.3
    slow = FailingCommit(lead, "replicas late", seconds=0.6)
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=0.05)
    agg.leadership.check_seconds = 0.05
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store, check=False):
        await store.add_batch(_batch(1))
        await _until(lambda: slow.calls >= 3)
        assert agg.leading and agg.leadership.epoch == 1
    assert "has not confirmed the lead" not in caplog.text


async def test_a_bug_in_a_lease_check_is_logged_in_full_and_the_checks_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that raises something other than a store error (a bug) is logged with its traceback, and
    the lease task goes on checking: the instance still takes the lead when it is free."""
    store = SQLiteStore(tmp_path)
    lead = Lead(store, leading=False)
    real, bugs = lead.lead, 1

    async def buggy() -> int | None:
        nonlocal bugs
        if bugs and lead.leading:
            bugs -= 1
            raise KeyError("a bug in the store")
        return await real()

    lead.lead = buggy
    agg = Aggregator(lead.as_store(), [Recorder()], Metrics(), window_seconds=3600)
    agg.leadership.check_seconds = 0.02
    caplog.set_level(logging.WARNING, logger="receipt_service")
    async with running(agg, store):
        lead.leading = True
        await _until(lambda: agg.leading)
        assert bugs == 0
    assert "lease check failed" in caplog.text and "KeyError: 'a bug in the store'" in caplog.text
