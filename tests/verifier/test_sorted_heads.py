"""The sorted heads tree (heads v1): head proofs of members and of absent subjects, each refusal named."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from receipt_verifier.errors import HistoryError, MalformedReceiptError
from receipt_verifier.heads import subject_key
from receipt_verifier.logs import EMPTY_ROOT
from receipt_verifier.sorted_heads import HeadsTree, check_heads_proof

from .histories import (
    LOGS,
    OTHER,
    SUBJECT,
    heads,
)


def _member(subject: str = SUBJECT) -> dict[str, Any]:
    proof: dict[str, Any] = heads(LOGS).prove(subject)["member"]
    return proof


def _check(proof: Any, subject: str = SUBJECT) -> tuple[int, bytes]:
    tree = heads(LOGS)
    return check_heads_proof(subject, proof, tree.root, tree.size)


@pytest.mark.parametrize(
    ("proof", "error", "message"),
    [
        ("member", MalformedReceiptError, 'head proof: expected {"member": ...} or {"absent": ...}'),
        (
            {"member": None, "absent": None},
            MalformedReceiptError,
            'head proof: expected {"member": ...} or {"absent": ...}',
        ),
        ({"absent": {"left": None}}, MalformedReceiptError, "head proof: absent needs left and right (null at an end)"),
        (
            {"absent": ["left", "right"]},
            MalformedReceiptError,
            "head proof: absent needs left and right (null at an end)",
        ),
        ({"member": "x"}, MalformedReceiptError, "head proof: expected index, key, size, root and path"),
        ({"member": {"index": 0}}, MalformedReceiptError, "head proof: expected index, key, size, root and path"),
        ({"member": {**_member(), "key": "zz"}}, MalformedReceiptError, "head proof: key, root and path are hex"),
        ({"member": {**_member(), "path": [5]}}, MalformedReceiptError, "head proof: key, root and path are hex"),
        ({"member": {**_member(), "index": "0"}}, MalformedReceiptError, "head proof: bad index, size, key or root"),
        ({"member": {**_member(), "size": "3"}}, MalformedReceiptError, "head proof: bad index, size, key or root"),
        ({"member": {**_member(), "index": -1}}, MalformedReceiptError, "head proof: bad index, size, key or root"),
        ({"member": {**_member(), "size": 0}}, MalformedReceiptError, "head proof: bad index, size, key or root"),
        (
            {"member": {**_member(), "key": "00" * 31}},
            MalformedReceiptError,
            "head proof: bad index, size, key or root",
        ),
        (
            {"member": {**_member(), "root": "00" * 33}},
            MalformedReceiptError,
            "head proof: bad index, size, key or root",
        ),
        ({"member": {**_member(), "path": ["00" * 31]}}, MalformedReceiptError, "head proof: path hashes are 32 bytes"),
        ({"member": {**_member(), "index": 2}}, HistoryError, "head proof: index 2 outside a heads tree of 2"),
        (
            {"member": {**_member(), "size": 2}},
            HistoryError,
            "tampered head proof: head proof does not lead to the anchored heads root",
        ),
        ({"member": _member(OTHER)}, HistoryError, "head proof: the proven leaf is another subject's"),
        (
            {"absent": {"left": None, "right": None}},
            HistoryError,
            "absence proof: without a left neighbour the right one must be leaf 0",
        ),
        (
            {"absent": {"left": {**_member(), "size": 9}, "right": None}},
            HistoryError,
            "tampered head proof: absence proof (left) does not lead to the anchored heads root",
        ),
        (
            {"absent": {"left": None, "right": {**_member(), "size": 9}}},
            HistoryError,
            "tampered head proof: absence proof (right) does not lead to the anchored heads root",
        ),
    ],
    ids=range(21),
)
def test_head_proofs_are_refused_with_their_reason(proof: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        _check(proof)
    assert str(err.value) == message


def test_a_path_of_the_wrong_length_names_the_proof() -> None:
    with pytest.raises(HistoryError) as err:
        _check({"member": {**_member(), "path": []}})
    assert str(err.value).startswith("head proof: ") and "tampered" not in str(err.value)


def _ends() -> tuple[HeadsTree, list[str], dict[str, Any], dict[str, Any]]:
    subjects = [f"did:example:s-{i:04d}" for i in range(4)]
    tree = HeadsTree({s: (1, bytes([i + 1]) * 32) for i, s in enumerate(subjects)})
    ordered = sorted(subjects, key=subject_key)
    return tree, ordered, tree.prove(ordered[0])["member"], tree.prove(ordered[-1])["member"]


def test_a_member_is_never_proven_absent_with_itself_as_a_neighbour() -> None:
    tree, ordered, _, _ = _ends()
    first, second = (tree.prove(s)["member"] for s in ordered[:2])
    for left, right, subject in ((first, second, ordered[0]), (first, second, ordered[1])):
        with pytest.raises(HistoryError) as err:
            check_heads_proof(subject, {"absent": {"left": left, "right": right}}, tree.root, tree.size)
        assert str(err.value) == "absence proof: the subject's key is not between the neighbours"


def test_absence_needs_adjacent_neighbours_and_both_ends() -> None:
    tree, ordered, first, last = _ends()
    between = next(
        p
        for p in (f"did:example:probe-{i}" for i in range(10_000))
        if subject_key(ordered[0]) < subject_key(p) and subject_key(p) < subject_key(ordered[1])
    )
    third = tree.prove(ordered[2])["member"]
    cases = [
        ({"left": first, "right": third}, "absence proof: the neighbours are not adjacent leaves"),
        ({"left": None, "right": None}, "absence proof: without a left neighbour the right one must be leaf 0"),
        ({"left": first, "right": None}, "absence proof: without a right neighbour the left one must be the last leaf"),
        ({"left": None, "right": last}, "absence proof: without a left neighbour the right one must be leaf 0"),
    ]
    for absent, message in cases:
        with pytest.raises(HistoryError) as err:
            check_heads_proof(between, {"absent": absent}, tree.root, tree.size)
        assert str(err.value) == message
    second = tree.prove(ordered[1])["member"]
    assert check_heads_proof(between, {"absent": {"left": first, "right": second}}, tree.root, tree.size) == (
        0,
        EMPTY_ROOT,
    )


def test_an_empty_heads_tree_has_the_empty_root() -> None:
    assert check_heads_proof(SUBJECT, {"absent": {"left": None, "right": None}}, EMPTY_ROOT, 0) == (0, EMPTY_ROOT)
    with pytest.raises(HistoryError) as err:
        check_heads_proof(SUBJECT, {"absent": {"left": None, "right": None}}, bytes(32), 0)
    assert str(err.value) == "absence proof: the window's heads tree has no leaves but a root that is not empty"
    with pytest.raises(HistoryError, match="outside a heads tree of 0"):
        check_heads_proof(SUBJECT, {"absent": {"left": _member(), "right": None}}, EMPTY_ROOT, 0)


def test_heads_tree_members_carry_their_size_and_root() -> None:
    big = 1 << 60
    tree = HeadsTree({SUBJECT: (big, b"\x07" * 32), OTHER: (0, EMPTY_ROOT)})
    member = tree.prove(SUBJECT)["member"]
    assert (tree.size, member["size"], member["root"], member["key"]) == (
        1,
        big,
        "07" * 32,
        hashlib.sha256(SUBJECT.encode("utf-8")).hexdigest(),
    )
    assert check_heads_proof(SUBJECT, {"member": member}, tree.root, 1) == (big, b"\x07" * 32)
