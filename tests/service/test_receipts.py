"""Windows -> trees -> receipts, verified by the standalone verifier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from receipt_service.ids import ProofIdIssuer
from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
from receipt_service.receipts import Submission, build_window, render, render_tree
from receipt_verifier import AnchorPolicy, Verifier, dumps
from receipt_verifier.model import PendingAnchor


def _subs(n: int, same_hash: bool = False) -> list[Submission]:
    issuer = ProofIdIssuer(7)
    h = os.urandom(32).hex()
    out = []
    for _ in range(n):
        hh = h if same_hash else os.urandom(32).hex()
        x = issuer.issue(hh, 1_763_712_000_000_000_000)  # the clock does not move: ids must still differ
        out.append(Submission(x.proof_id, hh, x.hash_received, os.urandom(16)))
    return out


@pytest.mark.parametrize(("n", "max_leaves", "sizes"), [(1, 5, [1]), (10, 5, [5, 5]), (11, 5, [5, 5, 1])])
def test_window_splits_into_trees(n: int, max_leaves: int, sizes: list[int]) -> None:
    trees = build_window("w1", _subs(n), max_leaves)
    assert [t.tree.size for t in trees] == sizes
    assert [t.tree_index for t in trees] == list(range(len(sizes)))


def test_repeated_hash_gets_distinct_ids_and_leaves(tmp_path: Path) -> None:
    subs = _subs(50, same_hash=True)
    assert len({s.proof_id for s in subs}) == 50
    ledger = LocalLedger(tmp_path)
    verifier = Verifier([ledger.public_key])
    for wt in build_window("w9", subs, 16):
        signed = ledger.append(
            TreeRoot("w9", wt.tree_index, wt.tree.size, wt.root_hex, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z"),
            "2025-01-01T00:00:01Z",
        )
        assert len(set(wt.tree.levels[0])) == wt.tree.size  # salted: equal hashes, distinct leaves
        for r in render_tree(wt, [to_anchor(ledger.key_id, signed)]):
            result = verifier.verify_policy(dumps(r), AnchorPolicy(), record_hash=r.hash)
            assert result.root == wt.root_hex


def test_states() -> None:
    sub = _subs(1)[0]
    assert render(sub).state == "pending"
    wt = build_window("w1", [sub])[0]
    from receipt_verifier.model import TreeInfo

    info = TreeInfo("w1", 0, 0, 1)
    assert render(sub, tree=info, pending=[PendingAnchor("local", "ledger")]).state == "aggregated"
    assert Verifier().verify(dumps(render(sub, tree=info))).root == wt.root_hex
