"""The branch walk: the fast v1 path equals Chainpoint's op semantics and refuses re-split siblings."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from receipt_verifier import BranchError, Verifier, parse_receipt
from receipt_verifier.ops import evaluate
from receipt_verifier.verify import _walk_v1_path, recompute_root
from tests.conftest import load_vector, service_receipts


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


def _leaf0_ops_change(change: Any) -> dict[str, Any]:
    doc = load_vector("valid/leaf0-of-3.json")  # leaf 0 of 3: siblings at ops[4] (r) and ops[7] (r), anchors at ops[10]
    change(doc["branches"][0]["ops"])
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ops: ops.append({"op": "sha-256"}), "ops[10]: after the path only one anchors op may follow"),
        (lambda ops: ops.insert(10, {"op": "sha-256"}), "ops[10]: after the path only one anchors op may follow"),
        (lambda ops: ops.append(dict(ops[10])), "ops[10]: after the path only one anchors op may follow"),
        (lambda ops: ops.__delitem__(slice(7, 10)), "the path ends at level 1; leaf 0 of 3 needs more"),
        (
            lambda ops: ops.__setitem__(4, {"l": ops[4]["r"]}),
            "ops[4]: leaf 0 of 3 needs the level-0 sibling on the right",
        ),
        (lambda ops: ops.__setitem__(5, {"l": "02"}), "ops[5..6] must be l 01, sha-256 (an RFC 6962 node hash)"),
        (lambda ops: ops.__setitem__(6, {"l": "01"}), "ops[5..6] must be l 01, sha-256"),
        (lambda ops: ops.__setitem__(7, {"r": ops[7]["r"].upper()}), "ops[7]: expected a 32-byte sibling hash"),
        (lambda ops: ops.__setitem__(7, {"r": ops[7]["r"][:62]}), "ops[7]: expected a 32-byte sibling hash"),
    ],
)
def test_a_path_of_the_wrong_shape_is_refused_and_named(change: Any, message: str) -> None:
    """Each is refused by the op-by-op walk, so the one-pass shape check must never take it."""
    doc = _leaf0_ops_change(change)
    with pytest.raises(BranchError) as info:
        recompute_root(parse_receipt(doc))
    assert message in str(info.value)
    with pytest.raises(BranchError):
        Verifier().verify(doc)


def test_the_one_pass_walk_takes_exactly_the_v1_shape() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    r = parse_receipt(doc)
    ops = r.branches[0].ops
    root, anchors = recompute_root(r)
    assert _walk_v1_path(ops, 0, 3, _leaf_value(r)) == (root, anchors)
    assert _walk_v1_path(ops[:10], 0, 3, _leaf_value(r)) == (root, ())  # without the anchors op
    for bad in (ops[:9], ops + ops[9:10], ops[:4] + ops[5:]):
        assert _walk_v1_path(bad, 0, 3, _leaf_value(r)) is None
    assert _walk_v1_path(ops, 1, 3, _leaf_value(r)) is None  # leaf 1 needs a left sibling first
    assert _walk_v1_path(ops, 0, 4, _leaf_value(r)) is None or _walk_v1_path(ops, 0, 4, _leaf_value(r)) == (
        root,
        anchors,
    )


def _leaf_value(r: Any) -> bytes:
    salt = r.branches[0].ops[0].value
    sha = hashlib.sha256
    return sha(b"\x00" + sha(bytes.fromhex(salt) + bytes.fromhex(r.hash)).digest()).digest()
