"""The branch walk: the fast v1 path equals Chainpoint's op semantics and refuses re-split siblings."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from receipt_verifier import BranchError, LimitExceededError, Limits, MalformedReceiptError, Verifier, parse_receipt
from receipt_verifier.errors import HashMismatchError, UsageError
from receipt_verifier.ledger import load_public_key_file
from receipt_verifier.ops import evaluate
from receipt_verifier.verify import AnchorPolicy, _walk_v1_path, recompute_root
from tests.conftest import VECTORS, load_vector, service_receipts


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


SIBLING_7 = "ops[7]: expected a 32-byte sibling hash in lowercase hex"
LABELLED = "the v1 branch is labelled 'window_tree' and has no child branches"
SALT = "ops[0] must be l: 16-byte nonce || 16-byte proof_id, as 64 lowercase hex"
BINDING = "ops[1] must be r: the SHA-256 of the receipt's canonical domain/subject/subject_seq (spec section 2.2)"


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
            "ops[4]: leaf 0 of 3 needs the level-0 sibling on the right (r), found l",
        ),
        (lambda ops: ops.__setitem__(5, {"l": "02"}), "ops[5..6] must be l 01, sha-256 (an RFC 6962 node hash)"),
        (lambda ops: ops.__setitem__(6, {"l": "01"}), "ops[5..6] must be l 01, sha-256 (an RFC 6962 node hash)"),
        (lambda ops: ops.__setitem__(7, {"r": ops[7]["r"].upper()}), SIBLING_7),
        (lambda ops: ops.__setitem__(7, {"r": ops[7]["r"][:62]}), SIBLING_7),
    ],
)
def test_a_path_of_the_wrong_shape_is_refused_and_named(change: Any, message: str) -> None:
    """Each is refused by the op-by-op walk, so the one-pass shape check must never take it."""
    doc = _leaf0_ops_change(change)
    with pytest.raises(BranchError) as info:
        recompute_root(parse_receipt(doc))
    assert str(info.value) == message
    with pytest.raises(BranchError) as info:
        Verifier().verify(doc)
    assert str(info.value) == message


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


def test_local_anchor_results_carry_their_reason_and_details() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    key = load_public_key_file(VECTORS / "ledger-key.pem")
    (anchor,) = Verifier([key]).verify(doc).anchors
    entry = doc["branches"][0]["ops"][-1]["anchors"][0]
    assert anchor.reason == f"signed ledger entry {entry['entry']['seq']}"
    assert dict(anchor.details) == {
        "ledger_key": entry["key_id"],
        "seq": entry["entry"]["seq"],
        "time": entry["entry"]["time"],
    }
    bad = copy.deepcopy(doc)
    sig = bad["branches"][0]["ops"][-1]["anchors"][0]["signature"]
    bad["branches"][0]["ops"][-1]["anchors"][0]["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    (failed,) = Verifier([key]).verify(bad).anchors
    assert failed.status.value == "failed" and "signature" in failed.reason and failed.reason != "None"


def test_the_strict_schema_mode_and_the_limits_apply_on_every_path() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    assert Verifier(strict_schema=True).verify(json.dumps(doc)).root is not None
    with pytest.raises(MalformedReceiptError, match=r"'extra' was unexpected\) \(JSON Schema\)"):
        Verifier(strict_schema=True).verify(json.dumps({**doc, "extra": 1}))
    v2 = load_vector("valid/v2-subject.json")  # not the one-pass path: the codec's limits apply
    with pytest.raises(LimitExceededError, match="more than 5 ops"):
        Verifier(limits=Limits(max_ops=5)).verify(v2)


def test_a_record_of_another_hash_is_named_in_lowercase() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    wrong = "AB" * 32
    with pytest.raises(HashMismatchError) as info:
        Verifier().verify(doc, record_hash=wrong)
    assert str(info.value) == (
        f"the record's SHA-256 {wrong.lower()} is not the hash this receipt covers ({doc['hash']})"
    )


def _change(name: str, change: Any) -> dict[str, Any]:
    doc = load_vector(name)
    change(doc, doc["branches"][0]["ops"])
    return doc


def _unanchor(doc: dict[str, Any], ops: list[Any], keep: int) -> None:
    """Keep the first ``keep`` ops, no anchors op: an aggregated receipt."""
    del ops[keep:]
    doc.update(state="aggregated", pending_anchors=[{"type": "local", "target": "local-x"}])


_V1, _V2 = "valid/leaf0-of-3.json", "valid/v2-subject.json"  # v2: leaf 1 of 3, binding at ops[1]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            _V1,
            lambda d, o: d["branches"].append(copy.deepcopy(d["branches"][0])),
            "a v1 receipt has exactly one branch, this one has 2",
        ),
        (_V1, lambda d, o: d["branches"][0].update(label="other"), LABELLED),
        (_V1, lambda d, o: d["branches"][0].update(branches=[{"ops": [{"op": "sha-256"}]}]), LABELLED),
        (_V1, lambda d, o: o.__delitem__(slice(2, -1)), "the branch is too short to hold the salted leaf"),
        (_V1, lambda d, o: o.__setitem__(0, {"r": o[0]["l"]}), SALT),
        (_V1, lambda d, o: o.__setitem__(0, {"l": o[0]["l"][:62]}), SALT),
        (_V1, lambda d, o: o.__setitem__(0, {"l": o[0]["l"].upper()}), SALT),
        (
            _V1,
            lambda d, o: o.__setitem__(0, {"l": o[0]["l"][:32] + "0" * 32}),
            "ops[0] does not commit to this receipt's proof_id",
        ),
        (
            _V1,
            lambda d, o: o.__setitem__(2, {"l": "01"}),
            "ops[1..3] must be sha-256, l 00, sha-256 (the RFC 6962 leaf hash)",
        ),
        (_V2, lambda d, o: o.__delitem__(1), BINDING),
        (_V2, lambda d, o: o.__setitem__(1, {"l": o[1]["r"]}), BINDING),
        (_V2, lambda d, o: _unanchor(d, o, 2), "the branch is too short to hold the salted leaf"),
        (
            _V2,
            lambda d, o: o.__setitem__(3, {"l": "01"}),
            "ops[2..4] must be sha-256, l 00, sha-256 (the RFC 6962 leaf hash)",
        ),
        (
            _V2,
            lambda d, o: o.__setitem__(5, {"r": o[5]["l"]}),
            "ops[5]: leaf 1 of 3 needs the level-0 sibling on the left (l), found r",
        ),
        (_V2, lambda d, o: o.__setitem__(6, {"l": "02"}), "ops[6..7] must be l 01, sha-256 (an RFC 6962 node hash)"),
        (
            _V2,
            lambda d, o: o.__setitem__(8, {"r": o[8]["r"][:62]}),
            "ops[8]: expected a 32-byte sibling hash in lowercase hex",
        ),
        (_V2, lambda d, o: _unanchor(d, o, 10), "the path ends at level 1; leaf 1 of 3 needs more"),
        (
            _V2,
            lambda d, o: (_unanchor(d, o, 11), o.__setitem__(8, {"r": o[8]["r"].upper()})),
            "ops[8]: expected a 32-byte sibling hash in lowercase hex",
        ),
        (_V2, lambda d, o: o.append({"op": "sha-256"}), "ops[11]: after the path only one anchors op may follow"),
        (
            _V1,
            lambda d, o: (_unanchor(d, o, 10), o.append({"op": "sha-256"})),
            "ops[10]: after the path only one anchors op may follow",
        ),
        (  # leaf 2 of 3 has no level-0 sibling: its one sibling (level 1) comes first
            "valid/leaf2-of-3.json",
            lambda d, o: o.__setitem__(4, {"r": o[4]["l"]}),
            "ops[4]: leaf 2 of 3 needs the level-1 sibling on the left (l), found r",
        ),
    ],
)
def test_every_branch_error_is_named_with_v2_op_numbers(name: str, change: Any, message: str) -> None:
    with pytest.raises(BranchError) as info:
        recompute_root(parse_receipt(_change(name, change)))
    assert str(info.value) == message


def test_a_single_leaf_tree_without_anchors_yet_has_the_leaf_as_root() -> None:
    doc = load_vector("valid/single-leaf.json")
    anchored_root, _ = recompute_root(parse_receipt(doc))
    doc["branches"][0]["ops"].pop()  # 4 ops: the salted leaf alone
    doc["state"] = "aggregated"
    doc["pending_anchors"] = [{"type": "local", "target": "local-x"}]
    root, anchors = recompute_root(parse_receipt(doc))
    assert (root, anchors) == (anchored_root, ())


def test_a_v1_receipt_is_verified_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass walk is the verifier's hot path: a well-formed v1 receipt never needs the codec's
    object model or the op-by-op walk (they would give the same verdict, three times slower)."""
    import receipt_verifier.verify as verify_module

    def no(*_: Any) -> Any:
        raise AssertionError("the slow path was taken")

    doc = load_vector("valid/leaf0-of-3.json")
    key = load_public_key_file(VECTORS / "ledger-key.pem")
    want = Verifier([key]).verify(doc)
    monkeypatch.setattr(verify_module, "parse_receipt", no)
    monkeypatch.setattr(verify_module, "recompute_root", no)
    for form in (doc, json.dumps(doc), json.dumps(doc).encode()):
        got = Verifier([key]).verify(form)
        assert (got.root, got.anchors, got.receipt) == (want.root, want.anchors, want.receipt)


@pytest.mark.parametrize("strict", [False, True])
def test_the_size_limit_applies_to_text_on_both_paths(strict: bool) -> None:
    text = json.dumps(load_vector("valid/leaf0-of-3.json"))
    limits = Limits(max_bytes=len(text) - 1)
    for form in (text, text.encode()):
        with pytest.raises(LimitExceededError) as info:
            Verifier(limits=limits, strict_schema=strict).verify(form)
        assert str(info.value) == f"receipt is {len(text)} bytes; the limit is {len(text) - 1}"
    assert Verifier(limits=Limits(max_bytes=len(text)), strict_schema=strict).verify(text).root is not None


def test_an_unknown_anchor_is_kept_with_no_details() -> None:
    anchors = Verifier().verify(load_vector("valid/unknown-anchor-type.json")).anchors
    (anchor,) = [a for a in anchors if a.type == "tsa"]
    assert anchor.status.value == "not_verified"
    assert anchor.details == {} and "details" not in anchor.to_dict()
    assert anchor.reason == f"unknown anchor type {anchor.type!r}: kept, not checked"


@pytest.mark.parametrize("text", ["some", "-1", "1.5", ""])
def test_a_bad_anchor_policy_says_what_it_may_be(text: str) -> None:
    with pytest.raises(UsageError) as info:
        AnchorPolicy.parse(text)
    assert str(info.value) == f"anchor policy {text!r} must be 'all', 'any' or a number (0: no anchor required)"


def test_the_json_report_says_whether_the_policy_is_met_and_why_not() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    key = load_public_key_file(VECTORS / "ledger-key.pem")
    good = Verifier([key]).verify(doc)
    unpinned = Verifier().verify(doc)  # no ledger key: the anchor is not verified
    policy = AnchorPolicy.parse("all")
    assert good.satisfies(policy) and not unpinned.satisfies(policy)
    assert unpinned.satisfies(AnchorPolicy.parse("0"))
    ok = good.to_dict(policy)
    assert ok["valid"] is True and "reason" not in ok
    assert ok["anchors"][0]["details"] == dict(good.anchors[0].details)
    bad = unpinned.to_dict(policy)
    assert bad["valid"] is False
    assert bad["reason"] == "0 of 1 anchor verified; the policy requires all"
    assert "valid" not in good.to_dict() and "reason" not in unpinned.to_dict()
