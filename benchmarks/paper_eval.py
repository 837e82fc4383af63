"""The seed paper's evaluation (Liang et al. 2017, Fig. 5 and 6), reproduced.

Average integrity-proof generation time and validation time per record, for 1 to 10,000
concurrent records. Generation = salt + tree + every branch + local-ledger anchor (Ed25519 +
fsync) + receipt JSON; validation = offline verification of each receipt (parse, proof_id,
branch, signature). Writes a table and benchmarks/out/paper_eval.png.

    python benchmarks/paper_eval.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
from receipt_service.receipts import build_window, render_tree
from receipt_verifier import AnchorPolicy, Verifier, dumps
from receipt_verifier._progress import table

from _common import OUT, submissions

SIZES = [1, 10, 100, 1_000, 10_000]


def run(n: int) -> tuple[float, float]:
    subs = submissions(n)
    ledger = LocalLedger(Path(tempfile.mkdtemp(prefix="paper-eval-")))
    t = time.perf_counter()
    texts = []
    for wt in build_window("weval", subs):
        signed = ledger.append(
            TreeRoot("weval", wt.tree_index, wt.tree.size, wt.root_hex, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"),
            "2025-01-01T00:00:01Z",
        )
        texts += [dumps(r) for r in render_tree(wt, [to_anchor(ledger.key_id, signed)])]
    gen = (time.perf_counter() - t) / n
    verifier = Verifier([ledger.public_key])
    policy = AnchorPolicy()
    t = time.perf_counter()
    for s in texts:
        verifier.verify_policy(s, policy)
    val = (time.perf_counter() - t) / n
    return gen, val


def main() -> None:
    rows, gens, vals = [], [], []
    for n in SIZES:
        print(f"  {n:,} records ...", file=sys.stderr)
        gen, val = min(run(n) for _ in range(3 if n < 10_000 else 1))
        gens.append(gen * 1e3)
        vals.append(val * 1e3)
        rows.append([f"{n:,}", f"{gen * 1e3:.4f}", f"{val * 1e3:.4f}"])
    print(table(["records", "avg generation ms/record", "avg validation ms/record"], rows))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, ys, title in (
        (axes[0], gens, "Fig. 5: integrity-proof generation"),
        (axes[1], vals, "Fig. 6: integrity-proof validation"),
    ):
        ax.plot(SIZES, ys, marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent records")
        ax.set_ylabel("average time per record (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    path = OUT / "paper_eval.png"
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
