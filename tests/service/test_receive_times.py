"""Every hash of a window was received within the window's start and end (spec section 14.7).

The store is sealed before a window is read from it, so a request received before the close but
stored after it is re-issued past the window's end rather than put in the next window."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from receipt_service.errors import TicksTakenError
from receipt_service.ids import ProofIdIssuer, iso_ticks
from receipt_service.lanes import Lane
from receipt_service.metrics import Metrics
from receipt_service.proofs import ProofReader
from receipt_service.stores.base import Batch, Store
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.windows import MAX_TREES_PER_WINDOW, Aggregator
from receipt_verifier import proof_id as pid

from .test_windows import Recorder, _until

Window = tuple[str, str, list[int]]  # start, end, the receive ticks of its hashes


async def windows_of(store: Store) -> list[Window]:
    """Every window of the lane, in order, with the receive ticks of its hashes."""
    out: dict[str, Window] = {}
    seq = 1
    while (tree := await store.tree_for_seq(seq)) is not None:
        window = out.setdefault(tree.window_id, (tree.window_start, tree.window_end, []))
        assert (window[0], window[1]) == (tree.window_start, tree.window_end), "a window's trees share its times"
        for span in await store.tree_batches(tree):
            part = span.between(tree.first_seq, tree.last_seq)
            window[2].extend(range(part.batch.first_ticks, part.batch.first_ticks + part.batch.count))
        seq = tree.last_seq + 1
    return list(out.values())


def check_times(windows: list[Window]) -> int:
    """Assert that windows tile time and hold only hashes received within them; returns the hashes."""
    for (_, end, _), (start, _, _) in itertools.pairwise(windows):
        assert start == end, "each window starts where the previous one ended"
    for start, end, ticks in windows:
        lo, hi = iso_ticks(start), iso_ticks(end)
        early = [t for t in ticks if t < lo]
        late = [t for t in ticks if t > hi]
        assert not early, f"window {start}..{end}: {len(early)} hash(es) received before it, first at {min(early)}"
        assert not late, f"window {start}..{end}: {len(late)} hash(es) received after it"
    return sum(len(w[2]) for w in windows)


def _lane(store: Store, agg: Aggregator) -> Lane:
    return Lane(store.domain, store, agg, ProofReader(agg), ProofIdIssuer(store.clock_seq, store.last_ticks()))


async def _submit(lane: Lane, n: int = 1) -> int:
    hashes = [os.urandom(32) for _ in range(n)]
    issued = await lane.store_hashes("t", hashes, b"".join(hashes), os.urandom(16 * n))
    return issued.first_ticks


async def _store_received(store: Store, received: list[int]) -> None:
    """One hash per receive time (Unix ns), stored in this order (as instances with their own clocks do)."""
    for ns in received:
        h = os.urandom(32)
        issued = ProofIdIssuer(store.clock_seq, 0).issue_batch([h], ns)
        await store.add_batch(Batch("t", issued.first_ticks, issued.proof_id_bytes, h, os.urandom(16)))


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Store]]:
    opened: list[Store] = []
    links: list[RedisLink] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path)
        else:
            links.append(RedisLink(RedisTarget.parse(url)))
            store = RedisStore(links[-1], domain=f"times-{os.urandom(3).hex()}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    for link in links:
        await link.close()


async def test_a_request_received_before_a_close_and_stored_after_it_is_reissued_past_it(
    open_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    agg = Aggregator(store, [Recorder()], Metrics(), window_seconds=3600)
    await agg.start()
    try:
        lane = _lane(store, agg)
        await _submit(lane)
        gate, held = asyncio.Event(), []
        real = store.add_batch

        async def slow(batch: Batch) -> int:  # the write of the first request stalls past the close
            if not held:
                held.append(batch.first_ticks)
                await gate.wait()
            return await real(batch)

        monkeypatch.setattr(store, "add_batch", slow)
        straggler = asyncio.create_task(_submit(lane))
        await _until(lambda: bool(held))
        assert await agg.close_window() == 1
        ((_, end, _),) = await windows_of(store)
        assert held[0] < iso_ticks(end), "the stalled request was received before the window ended"
        gate.set()
        ticks = await straggler
        assert ticks >= iso_ticks(end) and ticks != held[0], "re-issued at or after the window's end"
        assert await agg.close_window() == 1
        assert check_times(await windows_of(store)) == 2
    finally:
        await agg.drain(5)


async def test_every_hash_is_received_within_its_window_under_load(open_store: Callable[[], Store]) -> None:
    store = open_store()
    agg = Aggregator(store, [Recorder()], Metrics(), window_seconds=3600)
    await agg.start()
    done = asyncio.Event()  # set once 25 windows closed under the load, however slow the machine
    lane = _lane(store, agg)
    sent = 0

    async def client() -> None:
        nonlocal sent
        while not done.is_set():
            n = 1 + sent % 3
            await _submit(lane, n)
            sent += n

    async def closer() -> int:
        closes = 0
        while closes < 25:  # windows that held hashes
            if await agg.close_window():
                closes += 1
            await asyncio.sleep(0.005)
        done.set()
        return closes

    try:
        *_, closes = await asyncio.gather(*(client() for _ in range(16)), closer())
        await agg.close_window()
        windows = await windows_of(store)
        assert closes == 25 and len(windows) >= 25
        assert check_times(windows) == sent
    finally:
        await agg.drain(5)


async def test_a_capped_window_is_cut_between_receive_times(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    agg = Aggregator(store, [Recorder()], Metrics(), window_seconds=3600, max_leaves=1)
    await agg.start()
    try:
        now = time.time_ns() // 1000 * 1000
        # another instance's clock is behind: the batch after the cap was received before the last three
        received = [now + i * 1000 for i in range(MAX_TREES_PER_WINDOW + 4)]
        received[MAX_TREES_PER_WINDOW + 1] = received[MAX_TREES_PER_WINDOW - 3] - 500
        await _store_received(store, received)
        assert await agg.close_window() == len(received)
        windows = await windows_of(store)
        assert [len(w[2]) for w in windows] == [MAX_TREES_PER_WINDOW - 3, 7]
        assert check_times(windows) == len(received)
    finally:
        await agg.drain(5)
        await store.close()


async def test_a_backlog_without_a_cut_in_time_order_is_one_window(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    agg = Aggregator(store, [Recorder()], Metrics(), window_seconds=3600, max_leaves=1)
    await agg.start()
    try:
        now = time.time_ns() // 1000 * 1000
        received = [now + (i + 1) * 1000 for i in range(MAX_TREES_PER_WINDOW + 2)]
        received[-1] = now  # received before every other hash, stored last
        await _store_received(store, received)
        assert await agg.close_window() == len(received)
        windows = await windows_of(store)
        assert [len(w[2]) for w in windows] == [len(received)]
        assert check_times(windows) == len(received)
        late = ProofIdIssuer(store.clock_seq, 0).issue_batch([b"\x01" * 32], now + 500)
        with pytest.raises(TicksTakenError) as err:  # received before that window's end: refused
            await store.add_batch(Batch("t", late.first_ticks, late.proof_id_bytes, b"\x01" * 32, os.urandom(16)))
        assert err.value.last_ticks == iso_ticks(windows[0][1]) - 1
        assert pid.unix_ns_to_ticks(now) >= iso_ticks(windows[0][0])
    finally:
        await agg.drain(5)
        await store.close()


async def test_a_window_changing_too_many_subject_logs_is_split_into_chained_windows(tmp_path: Path) -> None:
    """Each part's transition proof must fit one Fabric transaction: the backlog becomes consecutive
    windows of at most ``max_subjects`` subjects, chained on the ledger (which replays them on open)."""
    from receipt_service.anchors import LocalLedgerBackend
    from receipt_service.ledger import LocalLedger

    from .test_windows import _batch

    store = SQLiteStore(tmp_path, domain="medical-history")
    local = LocalLedgerBackend(tmp_path)
    agg = Aggregator(store, [local], Metrics(), window_seconds=3600, max_subjects=3)
    await agg.start()
    subjects = [f"did:example:patient-{i:04d}" for i in (1, 2, 1, 3, 4, 1, 5, 6, 7, 2, 8)]
    try:
        for s in subjects:
            await store.add_batch(_batch(2, s))
        assert await agg.close_window() == 2 * len(subjects)
        windows = await windows_of(store)
        assert [len(w[2]) for w in windows] == [8, 6, 6, 2]  # {1,2,3}, {4,5}+1, {6,7,2}, {8}
        assert check_times(windows) == 2 * len(subjects)
        ledger = local.ledger
        assert isinstance(ledger, LocalLedger)
        await _until(lambda: (tip := ledger.lane_tip("medical-history")) is not None and tip.chain_seq == 3)
    finally:
        assert await agg.drain(5)
        await store.close()
    entries = [e.entry for e in LocalLedger(tmp_path).entries()]  # reopening replays every transition
    assert [e.chain_seq for e in entries] == [0, 1, 2, 3]
    assert [e.heads_size for e in entries] == [4, 6, 8, 9]  # the sentinel and each new subject
