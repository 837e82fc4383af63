"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from receipt_service.ids import ProofIdIssuer
from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
from receipt_service.receipts import Submission, build_window, render_tree
from receipt_verifier import dumps

OUT = Path(__file__).resolve().parent / "out"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``repeats`` runs (the least disturbed by a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def submissions(n: int) -> list[Submission]:
    issuer = ProofIdIssuer(1)
    out = []
    for _ in range(n):
        h = os.urandom(32).hex()
        x = issuer.issue(h, time.time_ns())
        out.append(Submission(x.proof_id, h, x.hash_received, os.urandom(16)))
    return out


def anchored_receipts(n: int, max_leaves: int = 25_000) -> tuple[list[str], LocalLedger]:
    """n receipts of one window, anchored to a throwaway local ledger, as JSON text."""
    ledger = LocalLedger(Path(tempfile.mkdtemp(prefix="bench-ledger-")))
    texts = []
    for wt in build_window("wbench", submissions(n), max_leaves):
        signed = ledger.append(
            TreeRoot(
                "wbench", wt.tree_index, wt.tree.size, wt.root_hex, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"
            ),
            "2025-01-01T00:00:01Z",
        )
        texts += [dumps(r) for r in render_tree(wt, [to_anchor(ledger.key_id, signed)])]
    return texts, ledger


def window_receipts(windows: int, leaves: int = 64) -> tuple[list[str], LocalLedger]:
    """One receipt from each of ``windows`` windows of ``leaves`` hashes: every receipt its own signed entry."""
    ledger = LocalLedger(Path(tempfile.mkdtemp(prefix="bench-ledger-")))
    subs = submissions(windows * leaves)
    texts = []
    for w in range(windows):
        for wt in build_window(f"w{w}", subs[w * leaves : (w + 1) * leaves], leaves):
            root = TreeRoot(
                f"w{w}", wt.tree_index, wt.tree.size, wt.root_hex, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"
            )
            signed = ledger.append(root, "2025-01-01T00:00:01Z")
            texts.append(dumps(render_tree(wt, [to_anchor(ledger.key_id, signed)])[w % leaves]))
    return texts, ledger
