"""Long polls: futures keyed by submission ``seq``, woken when that submission's tree changes state."""

from __future__ import annotations

import asyncio
import contextlib


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
