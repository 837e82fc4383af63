"""Freed heap goes back to the system: a fragmented heap's free pages are returned by ``trim_heap``."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from receipt_service.memory import trim_heap

from .conftest import Factory

# Allocate about 160 MiB in malloc-sized pieces, keep one in 64 (so the free pages lie between live
# ones and the heap cannot shrink from its top), then compare RSS before and after a trim.
_FRAGMENT = """
import os, sys
from receipt_service.memory import trim_heap

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

pieces = [bytearray(4000) for _ in range(40_000)]
kept = pieces[::64]
del pieces
before = rss()
assert trim_heap()
after = rss()
print(before, after, len(kept))
"""


def test_trimming_returns_the_free_pages_of_a_fragmented_heap() -> None:
    out = subprocess.run([sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True, timeout=120)
    before, after, _ = (int(x) for x in out.stdout.split())
    assert before - after > 100 * 2**20, f"RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB"


def test_trimming_is_available_on_this_c_library() -> None:
    assert trim_heap()  # glibc (Debian): the service's periodic trim runs here


async def test_the_service_trims_on_its_setting_and_stops_trimming_at_cleanup(make_env: Factory) -> None:
    env = await make_env(memory_trim_seconds=0.01)

    def trimming() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "memory-trim" and not t.done()]

    assert len(trimming()) == 1
    await asyncio.sleep(0.05)  # a few trims, in a worker thread, while requests are served
    assert (await env.client.get("/healthz")).status == 200
    assert len(trimming()) == 1, "the trim loop stopped on its own"
    await env.client.close()
    assert trimming() == []
    off = await make_env(memory_trim_seconds=0)
    assert (await off.client.get("/healthz")).status == 200 and trimming() == []
