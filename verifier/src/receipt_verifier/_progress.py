"""A dependency-free progress bar for batch commands (stderr, only on a terminal unless forced)."""

from __future__ import annotations

import sys
import time
from typing import Self, TextIO


class Progress:
    """``with Progress(total, "verifying") as p: p.advance()``."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.done += n
        if self.enabled:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width)
        rate = self.done / max(now - self._start, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<{width}}] {self.done}/{self.total} ({frac:4.0%}) {rate:,.0f}/s")
        self.stream.flush()


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain text table with aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
