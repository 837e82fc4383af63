"""The branch walk: the fast v1 path equals Chainpoint's op semantics and refuses re-split siblings."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from receipt_service.ids import ProofIdIssuer
from receipt_service.receipts import Submission, build_window, render_tree
from receipt_verifier import BranchError, Verifier, parse_receipt, receipt_to_dict
from receipt_verifier.model import LocalAnchor, UnknownAnchor
from receipt_verifier.ops import evaluate
from receipt_verifier.verify import recompute_root

_ANCHOR = UnknownAnchor("test", "t:1", {"type": "test", "anchor_id": "t:1"})


def _receipts(n: int) -> list[dict[str, Any]]:
    issuer = ProofIdIssuer(11)
    subs = []
    for _ in range(n):
        h = os.urandom(32).hex()
        x = issuer.issue(h, 1_763_712_000_000_000_000)
        subs.append(Submission(x.proof_id, h, x.hash_received, os.urandom(16)))
    (wt,) = build_window("w1", subs)
    return [json.loads(json.dumps(receipt_to_dict(r))) for r in render_tree(wt, [_ANCHOR])]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 12, 33])
def test_root_equals_chainpoint_semantics(size: int) -> None:
    for doc in _receipts(size):
        r = parse_receipt(doc)
        root, anchors = recompute_root(r)
        ((anchor, value),) = evaluate(bytes.fromhex(r.hash), r.branches)
        assert anchors == (anchor,) and value == root
        assert not isinstance(anchor, LocalAnchor)


def test_siblings_re_split_across_ops_are_refused() -> None:
    doc = _receipts(8)[3]
    ops = doc["branches"][0]["ops"]
    first, second = ops[4], ops[7]
    (k1, v1), (k2, v2) = next(iter(first.items())), next(iter(second.items()))
    first[k1], second[k2] = v1 + v2[:2], v2[2:]  # same concatenation, different split
    with pytest.raises(BranchError, match="32-byte sibling"):
        Verifier().verify(doc)
