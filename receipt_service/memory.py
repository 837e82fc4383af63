"""Handing freed heap memory back to the system (glibc's ``malloc_trim``).

glibc's malloc keeps freed memory for reuse. Under steady load the in-flight memory rises and falls,
so free pages end up scattered between live allocations, and the heap's footprint, RSS with it,
ratchets up with each new peak: ``benchmarks/service_soak.py`` saw about 12 MiB more after seven
minutes, slowing but not stopping. ``malloc_trim(0)`` returns every free page to the system, wherever
it lies in the heap; run every few seconds, it keeps RSS flat (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library: glibc has it, musl and macOS do not
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the system; False where the C library has no ``malloc_trim``."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


async def trim_every(seconds: float) -> None:
    """Trim the heap every ``seconds`` in a worker thread (it takes milliseconds), until cancelled."""
    if _malloc_trim() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(trim_heap)
