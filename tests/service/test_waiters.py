"""Long-poll waiters."""

from __future__ import annotations

from receipt_service.waiters import Waiters


async def test_waiters_wake_exactly_their_range_either_way_round() -> None:
    w = Waiters()
    futs = {s: w.register(s) for s in (1, 5, 9, 10)}
    extra = w.register(5)
    w.wake_range(5, 9)  # a range wider than the waiters: scans the waiters
    assert [s for s, f in futs.items() if f.done()] == [5, 9] and extra.done()
    w.wake_range(0, 1_000_000)
    assert futs[1].done() and futs[10].done()
    narrow = [w.register(s) for s in range(100)]
    w.wake_range(40, 41)  # a range narrower than the waiters: scans the range
    assert [i for i, f in enumerate(narrow) if f.done()] == [40, 41]
    kept, dropped = w.register(3), w.register(3)
    w.discard(3, dropped)
    w.discard(3, dropped)  # twice is harmless
    w.discard(77_777, dropped)  # so is a seq nobody waits for
    w.wake_range(3, 3)
    assert kept.done() and not dropped.done()
    gone = w.register(200)
    w.discard(200, gone)
    assert 200 not in w._by_seq  # the last future of a seq takes its entry with it
    done_already = w.register(6)
    done_already.cancel()
    w.wake_range(6, 6)  # a cancelled waiter is skipped, not set
    assert done_already.cancelled()
