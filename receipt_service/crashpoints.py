"""Crash points for tests: ``HEALTH_RECEIPTS_CRASH_AT=NAME[:N]`` kills the process with SIGKILL the N-th
time (default 1st) execution reaches ``crash_point(NAME)``. Unset (always, in production) it costs one
comparison. The points are the moments where a crash is most dangerous:

- ``window-built``: trees built, nothing committed;
- ``window-committed``: trees and anchor jobs committed, no anchor sent yet;
- ``anchor-sent``: a backend took a root (ledger entry fsynced, Fabric transaction committed), the
  store has not recorded the anchor yet.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"window-built", "window-committed", "anchor-sent"})
ENV = "HEALTH_RECEIPTS_CRASH_AT"


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS or (count and not count.isdigit()):
        raise SystemExit(f"{ENV}={spec!r}: use one of {', '.join(sorted(POINTS))}, optionally :N")
    return name, int(count or 1)


_ARMED = _armed()
_hits = 0


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if this point is armed and its count is reached."""
    global _hits
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits += 1
    if _hits >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
