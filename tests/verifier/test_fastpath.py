"""The one-pass path for plain anchored receipts agrees with the general parser and branch walk."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receipt_service.ledger import LocalLedger
from receipt_verifier import MalformedReceiptError, Verifier, parse_receipt
from receipt_verifier.codec import DEFAULT_LIMITS
from receipt_verifier.errors import Error
from receipt_verifier.fastpath import PathMemo, parse_and_walk
from receipt_verifier.verify import recompute_root
from tests.conftest import VECTORS, leaf0_of_3_limits, load_vector, service_receipts


def _general(doc: Any) -> tuple[Any, bytes, Any] | None:
    try:
        r = parse_receipt(doc)
        root, anchors = recompute_root(r)
    except Error:
        return None
    return r, root, anchors


def _agree(doc: Any) -> None:
    fast = parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS)
    if fast is not None:
        assert _general(doc) == fast, "the fast path accepted or computed something the general path does not"


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_service_receipts_take_the_fast_path_with_identical_results(tmp_path: Any, n: int) -> None:
    for doc in service_receipts(tmp_path, n, max(1, n // 2)):
        fast = parse_and_walk(doc, DEFAULT_LIMITS)
        assert fast is not None
        assert fast == _general(doc)


def test_valid_vectors_agree() -> None:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    for entry in manifest["vectors"]:
        _agree(load_vector(entry["file"]))


def _paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*here, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*here, i))
    return out


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2**33),
    st.floats(allow_nan=False),
    st.text(max_size=70),
    st.text("0123456789abcdefABCDEF-\n ", min_size=0, max_size=130),
    st.sampled_from(["l", "r", "op", "anchors", "sha-256", "00", "01", "window_tree", "anchored", "aggregated"]),
    st.builds(dict),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(
        st.sampled_from(["l", "r", "op", "x"]), st.sampled_from(["01", "00", "sha-256", "ab" * 32]), max_size=2
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_receipts_never_take_the_fast_path_wrongly(tmp_path_factory: Any, data: st.DataObject) -> None:
    base = service_receipts(tmp_path_factory.mktemp("fp"), 6, 3)
    doc = copy.deepcopy(data.draw(st.sampled_from(base)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = data.draw(st.sampled_from(["replace", "delete", "add", "flip"]))
        if action == "replace":
            parent[key] = data.draw(_values)
        elif action == "delete":
            del parent[key]
        elif action == "add":
            if isinstance(parent, dict):
                parent[data.draw(st.sampled_from(["extra", "l", "r", "label", "branches", "pending_anchors"]))] = (
                    data.draw(_values)
                )
            else:
                parent.insert(key, data.draw(_values))
        elif isinstance(parent[key], dict) and len(parent[key]) == 1:
            ((k, v),) = parent[key].items()
            parent[key] = {{"l": "r", "r": "l"}.get(k, "l"): v}
    _agree(doc)


def test_verifier_reports_the_same_through_either_path(tmp_path: Any) -> None:
    doc = service_receipts(tmp_path, 3)[1]
    ledger = LocalLedger(tmp_path)
    fast = Verifier([ledger.public_key]).verify(json.dumps(doc))
    general = Verifier([ledger.public_key]).verify(parse_receipt(doc))
    assert fast == general


def test_verifier_caches_are_bounded_and_forks_still_caught(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import receipt_verifier.verify as verify_module

    monkeypatch.setattr(verify_module, "_CACHE_MAX", 2)
    docs = service_receipts(tmp_path, 5, 1)  # five trees, five ledger entries
    v = Verifier([LocalLedger(tmp_path).public_key])
    for doc in docs * 2:
        assert v.verify(json.dumps(doc)).anchors[0].status.value == "verified"
        assert len(v._local_results) <= 2 and len(v._sig_cache) <= 2
    assert len(v._seen) == 5  # fork detection forgets nothing


def test_receipts_of_one_tree_share_the_nodes_their_paths_meet_at(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 64, 64)
    memo = PathMemo()
    for doc in docs:
        assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS, memo) == _general(doc)
    # every leaf meets a node an earlier path passed, but leaf 0 and leaf 32 (whose path meets the others' at the root)
    assert memo.hits == 64 - 2
    # a changed sibling anywhere still changes the root, with the memo primed
    truth = _general(docs[5])
    assert truth is not None
    for level in range(6):  # below, at and above the node where leaf 5 meets leaf 4 (level 1)
        bad = copy.deepcopy(docs[5])
        ops = bad["branches"][0]["ops"]
        sib = [op for op in ops[4:-1] if op not in ({"l": "01"}, {"op": "sha-256"})][level]
        side = next(iter(sib))
        sib[side] = ("0" if sib[side][0] != "0" else "1") + sib[side][1:]
        fast = parse_and_walk(bad, DEFAULT_LIMITS, memo)
        assert fast is not None and fast[1] != truth[1], level
        assert fast == _general(bad), level  # the same wrong root and ops as the general walk


def test_out_of_order_receipts_share_nodes_and_walk_whole_without_a_memo(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 16, 16)
    memo = PathMemo()
    for doc in reversed(docs):
        assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS, memo) == _general(doc)
        assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS) == _general(doc)  # no memo: the whole path
    assert memo.hits == 16 - 2  # leaf 15 first, leaf 7 meeting the others at the root
    verifier = Verifier([LocalLedger(tmp_path).public_key])
    for doc in docs:
        assert verifier.verify(json.dumps(doc)).anchors[0].status.value == "verified"
    assert verifier._paths.hits == 14  # a verifier shares the work between the receipts it checks


def test_a_path_memo_filled_exactly_to_its_size_is_not_cleared(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 8, 8)
    memo = PathMemo(size=3)
    parse_and_walk(copy.deepcopy(docs[0]), DEFAULT_LIMITS, memo)  # passes 2 nodes above its leaf
    parse_and_walk(copy.deepcopy(docs[2]), DEFAULT_LIMITS, memo)  # 1 new node, then meets leaf 0's path
    assert len(memo.nodes) == 3 and memo.hits == 1


def test_the_path_memo_holds_at_most_its_size_and_a_size_0_memo_nothing(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 8, 8)  # 3 levels: a leaf's path passes 2 nodes above it
    memo = PathMemo(size=2)
    parse_and_walk(copy.deepcopy(docs[0]), DEFAULT_LIMITS, memo)
    first = dict(memo.nodes)
    assert len(first) == 2
    parse_and_walk(copy.deepcopy(docs[7]), DEFAULT_LIMITS, memo)  # meets leaf 0 at the root only: 2 new nodes
    assert len(memo.nodes) == 2 and not first.keys() & memo.nodes.keys()  # cleared first, then filled
    empty = PathMemo(size=0)
    for doc in docs:
        assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS, empty) == _general(doc)
    assert not empty.nodes and empty.hits == 0


@pytest.mark.parametrize(
    ("change", "taken"),
    [
        (lambda d: d["tree"].update(tree_index=2**31 - 1), True),
        (lambda d: d["tree"].update(tree_index=2**31), False),
        (lambda d: d["tree"].update(leaf_index=d["tree"]["tree_size"]), False),
        (lambda d: d["tree"].update(leaf_index=-1), False),
        (lambda d: d.update(hash=d["hash"][:63]), False),
        (lambda d: d.update(proof_id=d["proof_id"].upper()), False),
        (
            lambda d: d.update(proof_id=d["proof_id"][:7] + "-" + d["proof_id"][7] + d["proof_id"][9:]),
            False,
        ),  # a dash moved
        (lambda d: d.update(hash_received=d["hash_received"] + "x"), False),
        (lambda d: d["branches"][0]["ops"][0].update(l=d["branches"][0]["ops"][0]["l"][:63]), False),
        (lambda d: d["branches"][0]["ops"][0].update(l=5), False),  # not text at all
        (lambda d: d["tree"].update(window_id=5), False),
        (lambda d: d["tree"].update(window_id="a b"), False),
        (lambda d: d["branches"][0]["ops"][4].update(op="sha-256"), False),  # a sibling op with a second key
        (lambda d: d["branches"][0]["ops"].__setitem__(4, [d["branches"][0]["ops"][4]["r"]]), False),  # not an object
    ],
)
def test_the_fast_path_takes_only_what_the_codec_takes(change: Any, taken: bool) -> None:
    """Anything at or past a bound goes to the codec, which names it; the fast path never decides it."""
    doc = load_vector("valid/leaf0-of-3.json")
    change(doc)
    assert (parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS) is not None) is taken
    _agree(doc)


def test_the_fast_path_keeps_to_the_limits_at_their_edges() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    for limits, taken in leaf0_of_3_limits():
        assert (parse_and_walk(copy.deepcopy(doc), limits) is not None) is taken, limits


def test_a_tree_of_the_largest_size_takes_the_fast_path() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    ops = doc["branches"][0]["ops"]
    doc["tree"]["tree_size"] = 2**32  # leaf 0's path: 32 right siblings
    doc["branches"][0]["ops"] = ops[:4] + [{"r": "ab" * 32}, {"l": "01"}, {"op": "sha-256"}] * 32 + ops[-1:]
    assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS) is not None
    _agree(doc)


def test_a_leaf_index_equal_to_the_tree_size_is_left_to_the_codec() -> None:
    doc = load_vector("valid/single-leaf.json")  # leaf 1 of 1 would need no siblings, like leaf 0 of 1
    assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS) is not None
    doc["tree"]["leaf_index"] = 1
    assert parse_and_walk(copy.deepcopy(doc), DEFAULT_LIMITS) is None
    with pytest.raises(MalformedReceiptError, match="1 is outside a tree of 1 leaves"):
        parse_receipt(doc)
