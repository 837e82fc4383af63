"""The branch walk: the fast v1 path equals Chainpoint's op semantics and refuses re-split siblings."""

from __future__ import annotations

from pathlib import Path

import pytest

from receipt_verifier import BranchError, Verifier, parse_receipt
from receipt_verifier.ops import evaluate
from receipt_verifier.verify import recompute_root
from tests.conftest import service_receipts


@pytest.mark.parametrize("size", [1, 2, 3, 7, 12, 33])
def test_root_equals_chainpoint_semantics(tmp_path: Path, size: int) -> None:
    for doc in service_receipts(tmp_path, size):
        r = parse_receipt(doc)
        root, anchors = recompute_root(r)
        ((anchor, value),) = evaluate(bytes.fromhex(r.hash), r.branches)
        assert anchors == (anchor,) and value == root


def test_siblings_re_split_across_ops_are_refused(tmp_path: Path) -> None:
    doc = service_receipts(tmp_path, 8)[3]
    ops = doc["branches"][0]["ops"]
    first, second = ops[4], ops[7]
    (k1, v1), (k2, v2) = next(iter(first.items())), next(iter(second.items()))
    first[k1], second[k2] = v1 + v2[:2], v2[2:]  # same concatenation, different split
    with pytest.raises(BranchError, match="32-byte sibling"):
        Verifier().verify(doc)
