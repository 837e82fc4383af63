"""The strict codec: limits, clear errors, round trip, and agreement with the JSON Schema."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_verifier import LimitExceededError, Limits, MalformedReceiptError, UnknownContextError, parse_receipt
from receipt_verifier.codec import dumps, json_type, parse_entry, receipt_to_dict
from receipt_verifier.errors import Error
from receipt_verifier.schema import known_contexts, receipt_schema, validate_schema
from tests.conftest import VECTORS, load_vector

VALID_FILES = [
    "valid/leaf0-of-3.json",
    "valid/pending.json",
    "valid/aggregated.json",
    "valid/local-and-fabric.json",
    "valid/unknown-anchor-type.json",
    "valid/single-leaf.json",
]


@pytest.mark.parametrize("name", VALID_FILES)
def test_round_trip_and_schema(name: str) -> None:
    doc = load_vector(name)
    assert receipt_to_dict(parse_receipt(doc)) == doc
    validate_schema(doc)


def test_limits_have_clear_errors() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    text = json.dumps(doc)
    with pytest.raises(LimitExceededError, match="bytes; the limit is 100"):
        parse_receipt(text, Limits(max_bytes=100))
    with pytest.raises(LimitExceededError, match="more than 5 ops"):
        parse_receipt(text, Limits(max_ops=5))
    nested: dict[str, Any] = {"ops": [{"op": "sha-256"}]}
    for _ in range(10):
        nested = {"ops": [{"op": "sha-256"}], "branches": [nested]}
    deep = copy.deepcopy(doc)
    deep["branches"][0]["branches"] = [nested]
    with pytest.raises(LimitExceededError, match="nest deeper than 8"):
        parse_receipt(deep)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda d: d.pop("hash"), "missing field"),
        (lambda d: d.update(proof_id=5), "proof_id: must be a lowercase UUID"),
        (lambda d: d["branches"][0]["ops"].append({"op": "sha-512"}), "v1 knows only sha-256"),
        (lambda d: d["branches"][0]["ops"].append({"x": "1"}), "unknown op"),
        (lambda d: d["branches"][0]["ops"].append({"l": "01", "r": "02"}), "exactly one of"),
        (lambda d: d["tree"].update(leaf_index=3), "outside a tree of 3"),
        (lambda d: d["tree"].update(tree_size=True), "tree_size: must be an integer"),
        # a trailing newline passes Python's "$": every pattern must match the whole value
        (lambda d: d.update(hash=d["hash"] + "\n"), "hash: must be a SHA-256 hash"),
        (lambda d: d["tree"].update(window_id=d["tree"]["window_id"] + "\n"), "tree.window_id: must be an id"),
        (
            lambda d: d["branches"][0]["ops"][-1]["anchors"][0].update(
                signature=d["branches"][0]["ops"][-1]["anchors"][0]["signature"] + "\n"
            ),
            "signature: must be 128 lowercase hex",
        ),
    ],
)
def test_errors_name_the_field(mutation: Any, message: str) -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    mutation(doc)
    with pytest.raises(MalformedReceiptError, match=message):
        parse_receipt(doc)


def test_op_values_with_a_trailing_newline_are_text_not_hex() -> None:
    from receipt_verifier.hashing import op_value_bytes

    assert op_value_bytes("abc\n") == b"abc\n"
    assert op_value_bytes("abcd") == b"\xab\xcd"


def test_not_json() -> None:
    with pytest.raises(MalformedReceiptError, match="not valid JSON"):
        parse_receipt(b"{not json")


def test_unknown_context_is_rejected_not_fetched() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    doc["@context"] = "https://example.org/ctx"
    with pytest.raises(UnknownContextError, match="verifier knows"):
        parse_receipt(doc)
    assert set(known_contexts()) == {"https://w3id.org/health-receipt/v1", "https://w3id.org/health-receipt/v2"}


def _mutations() -> st.SearchStrategy[tuple[list[Any], Any]]:
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 2**33),
        st.text(max_size=70),
        st.sampled_from(["01", "00", "sha-256", "local", "fabric", "f" * 64, "A" * 64]),
        st.lists(st.integers(0, 3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    return st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=6), values)


def _apply(doc: Any, path: list[int], value: Any) -> None:
    """Walk ``path`` (indices choose a key or item) and replace, delete or add at the end."""
    node = doc
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        else:
            break
    last = path[-1]
    if isinstance(node, dict):
        keys = sorted(node)
        if last % 3 == 0 or not keys:
            node[f"k{last}"] = value
        elif last % 3 == 1:
            del node[keys[last % len(keys)]]
        else:
            node[keys[last % len(keys)]] = value
    elif isinstance(node, list):
        if node and last % 2:
            node[last % len(node)] = value
        else:
            node.append(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_FILES), _mutations())
def test_codec_is_at_least_as_strict_as_the_schema(name: str, mutation: tuple[list[Any], Any]) -> None:
    """Whatever the JSON Schema rejects, the fast codec rejects too."""
    import jsonschema

    doc = load_vector(name)
    _apply(doc, *mutation)
    schema_ok = jsonschema.Draft202012Validator(receipt_schema()).is_valid(doc)
    try:
        parse_receipt(doc)
        codec_ok = True
    except Error:
        codec_ok = False
    if not schema_ok:
        assert not codec_ok


@pytest.mark.parametrize("value", [True, 1.0])
def test_cached_ledger_entry_still_rejects_non_integers(value: Any) -> None:
    doc = load_vector("valid/leaf1-of-3.json")
    parse_receipt(doc)  # warms the parse cache for this entry
    entry = doc["branches"][0]["ops"][-1]["anchors"][0]["entry"]
    entry["seq"] = value if entry["seq"] == 1 else entry["seq"]
    entry["tree_index"] = value if entry["tree_index"] == 1 else entry["tree_index"]
    with pytest.raises(MalformedReceiptError, match="must be an integer"):
        parse_receipt(doc)


def test_dumps_is_compact_json() -> None:
    text = dumps(parse_receipt(load_vector("valid/leaf0-of-3.json")))
    assert ": " not in text and ", " not in text and json.loads(text)["state"] == "anchored"


def test_pending_anchors_are_bounded_at_16() -> None:
    doc = load_vector("valid/pending.json")
    doc["pending_anchors"] = [{"type": "local", "target": f"t{i}"} for i in range(16)]
    assert len(parse_receipt(doc).pending_anchors) == 16
    doc["pending_anchors"].append({"type": "local", "target": "t16"})
    with pytest.raises(MalformedReceiptError, match="pending_anchors: must be a list of at most 16 targets"):
        parse_receipt(doc)
    with pytest.raises(MalformedReceiptError, match="pending_anchors"):
        parse_receipt(dict(doc, pending_anchors={"type": "local"}))


def test_v2_ledger_entries_carry_the_heads_and_nothing_else_may_change() -> None:
    from receipt_verifier.codec import parse_entry

    anchor = json.loads((VECTORS / "history" / "complete.json").read_text())["window"]["anchors"][0]
    entry = anchor["entry"]
    e = parse_entry(entry, "entry")
    assert (e.domain, e.heads_root, e.heads_size) == (entry["domain"], entry["heads_root"], entry["heads_size"])
    assert e.to_dict() == entry  # v2 round-trips
    for change, words in [
        ({"v": 4}, "entry.v: unsupported ledger entry version 4"),
        ({"v": 3}, "entry: missing field(s): chain_seq, proof_hash"),  # v3 adds the chain position
        ({"v": "2"}, "entry.v"),
        ({"heads_size": -1}, "entry.heads_size"),
        ({"heads_size": 2**53}, "entry.heads_size"),
        ({"heads_root": "00"}, "entry.heads_root"),
        ({"domain": "Medical"}, "entry.domain"),
    ]:
        with pytest.raises(MalformedReceiptError, match=re.escape(words)):
            parse_entry(dict(entry, **change), "entry")
    with pytest.raises(MalformedReceiptError, match="entry: missing field"):
        parse_entry({k: v for k, v in entry.items() if k != "heads_size"}, "entry")
    with pytest.raises(MalformedReceiptError, match="entry: unknown field"):
        parse_entry(dict(entry, v=1), "entry")  # a v1 entry has no heads
    assert parse_entry(dict(entry, heads_size=0), "entry").heads_size == 0


@pytest.mark.parametrize("name", sorted(p.name for p in (VECTORS / "valid").glob("*.json")))
def test_every_valid_vector_round_trips(name: str) -> None:
    """v1 and v2 (the binding's domain, subject and position come back) alike."""
    doc = load_vector(f"valid/{name}")
    assert receipt_to_dict(parse_receipt(doc)) == doc


def test_nested_branches_round_trip() -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    doc["branches"][0]["branches"] = [{"label": "inner", "ops": [{"op": "sha-256"}]}]
    assert receipt_to_dict(parse_receipt(doc))["branches"][0]["branches"] == doc["branches"][0]["branches"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"domain": "Bad"}, "domain: must be a domain name (lowercase letters, digits, '-'), got 'Bad'"),
        ({"subject_seq": None}, "subject: subject and subject_seq come together: both or neither"),
        ({"subject": "short"}, "subject: must be 16-128 characters of A-Z a-z 0-9 . _ : % -, got 'short'"),
        ({"subject_seq": -1}, "subject_seq: must be an integer in [0, "),
    ],
)
def test_binding_errors_say_which_field_and_what_it_must_be(change: dict[str, Any], message: str) -> None:
    doc = load_vector("valid/v2-subject.json")
    for k, v in change.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "a boolean"),
        (3, "a number"),
        (1.5, "a number"),
        ("x", "a string"),
        ([], "an array"),
        ({}, "an object"),
        (b"x", "bytes"),
    ],
)
def test_json_type_names(value: Any, name: str) -> None:
    assert json_type(value) == name


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("local", "pending_anchors[0]: expected an object, got a string"),
        ({"type": "local"}, "pending_anchors[0]"),
        ({"type": "Bad Type", "target": "t"}, "pending_anchors[0].type: must be an anchor type name, got 'Bad Type'"),
        ({"type": "local", "target": "a b"}, "pending_anchors[0].target: must be a target name, got 'a b'"),
    ],
)
def test_pending_anchor_errors_name_the_item(item: Any, message: str) -> None:
    doc = load_vector("valid/pending.json")
    doc["pending_anchors"] = [item]
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value)


def _fabric_anchor_doc() -> tuple[dict[str, Any], dict[str, Any]]:
    doc = load_vector("valid/local-and-fabric.json")
    anchors = doc["branches"][0]["ops"][-1]["anchors"]
    return doc, next(a for a in anchors if a["type"] == "fabric")


@pytest.mark.parametrize(
    ("uris", "ok"),
    [
        (["u"] * 8, True),
        (["u"] * 9, False),
        ([""], False),
        (["x" * 2048], True),
        (["x" * 2049], False),
        ([5], False),
        ("u", False),
    ],
)
def test_fabric_anchor_uris_are_bounded(uris: Any, ok: bool) -> None:
    doc, fabric = _fabric_anchor_doc()
    fabric["uris"] = uris
    if ok:
        assert parse_receipt(doc).anchors()
        return
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value).endswith(".uris: must be a list of at most 8 URI strings")
    assert "branches[0].ops[" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("anchor_id", "", ".anchor_id: must be an anchor id, got ''"),
        ("channel", "Bad Channel", ".channel: must be a channel name, got 'Bad Channel'"),
        ("extra", 1, "unknown field"),
    ],
)
def test_fabric_anchor_fields_are_named(field: str, value: Any, message: str) -> None:
    doc, fabric = _fabric_anchor_doc()
    fabric[field] = value
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value) and "anchors[" in str(info.value)


def test_a_receipt_of_exactly_the_size_limit_is_read() -> None:
    text = json.dumps(load_vector("valid/leaf0-of-3.json"))
    assert parse_receipt(text, Limits(max_bytes=len(text)))
    with pytest.raises(LimitExceededError):
        parse_receipt(text, Limits(max_bytes=len(text) - 1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tx_id", "ab", ".tx_id: must be 64 lowercase hex characters, got 'ab'"),
        ("block_number", -1, f".block_number: must be an integer in [0, {2**63 - 1}], got -1"),
        ("block_number", 2**63, ".block_number: must be an integer in [0, "),
        ("key", "\x01", ".key: must be a printable ledger key, got"),
        ("chaincode", "", ".chaincode: must be a chaincode name, got ''"),
    ],
)
def test_more_fabric_anchor_fields_are_named(field: str, value: Any, message: str) -> None:
    doc, fabric = _fabric_anchor_doc()
    fabric[field] = value
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value) and "anchors[" in str(info.value)


def test_fabric_block_numbers_from_0_to_2_63_minus_1() -> None:
    for number in (0, 2**63 - 1):
        doc, fabric = _fabric_anchor_doc()
        fabric["block_number"] = number
        assert any(getattr(a, "block_number", None) == number for a in parse_receipt(doc).anchors())


@pytest.mark.parametrize(
    ("anchor", "message"),
    [
        ({"type": "Bad Type", "anchor_id": "x"}, ".type: must be an anchor type name, got 'Bad Type'"),
        ({"type": "tsa", "anchor_id": ""}, ".anchor_id: must be a string of 1 to 512 characters"),
        ({"type": "tsa", "anchor_id": "x" * 513}, ".anchor_id: must be a string of 1 to 512 characters"),
        ({"type": "tsa", "anchor_id": 7}, ".anchor_id: must be a string of 1 to 512 characters"),
        ({"type": "tsa", "anchor_id": "x"}, None),
        ({"type": "tsa", "anchor_id": "x" * 512}, None),
    ],
)
def test_unknown_anchor_types_are_kept_within_bounds(anchor: dict[str, Any], message: str | None) -> None:
    doc = load_vector("valid/unknown-anchor-type.json")
    doc["branches"][0]["ops"][-1]["anchors"][1] = anchor
    if message is None:
        assert parse_receipt(doc).anchors()[1].anchor_id == anchor["anchor_id"]
        return
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value) and "anchors[1]" in str(info.value)


def _entry_v2() -> dict[str, Any]:
    doc = load_vector("valid/leaf0-of-3.json")
    entry = dict(doc["branches"][0]["ops"][-1]["anchors"][0]["entry"])
    entry.update(v=2, domain="medical-history", heads_root="ab" * 32, heads_size=3)
    return entry


@pytest.mark.parametrize(
    ("field", "top"),
    [("seq", 2**53 - 1), ("tree_index", 2**31 - 1), ("heads_size", 2**53 - 1)],
)
def test_ledger_entry_integers_reach_exactly_their_bound(field: str, top: int) -> None:
    entry = _entry_v2()
    entry[field] = top
    assert getattr(parse_entry(entry, "e"), field) == top
    entry[field] = top + 1
    with pytest.raises(MalformedReceiptError) as info:
        parse_entry(entry, "e")
    assert str(info.value) == f"e.{field}: must be an integer in [0, {top}], got {top + 1}"


def test_a_ledger_entry_tree_holds_1_to_2_32_leaves() -> None:
    entry = _entry_v2()
    for size in (1, 2**32):
        entry["tree_size"] = size
        assert parse_entry(entry, "e").tree_size == size
    for size in (0, 2**32 + 1):
        entry["tree_size"] = size
        with pytest.raises(MalformedReceiptError) as info:
            parse_entry(entry, "e")
        assert str(info.value) == f"e.tree_size: must be an integer in [1, {2**32}], got {size}"


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("domain", "Bad", "a domain name"),
        ("heads_root", "AB" * 32, "64 lowercase hex characters"),
        ("prev", "00", "64 lowercase hex characters"),
        ("window_id", "", "an id of [A-Za-z0-9._:-]{1,64}"),
        ("root", "zz", "64 lowercase hex characters"),
        ("time", "yesterday", "an RFC 3339 UTC time"),
        ("window_start", "noon", "an RFC 3339 UTC time"),
        ("window_end", "2026-01-01 00:00:00Z", "an RFC 3339 UTC time"),
    ],
)
def test_ledger_entry_strings_say_what_they_must_be(field: str, value: str, what: str) -> None:
    entry = _entry_v2()
    entry[field] = value
    with pytest.raises(MalformedReceiptError) as info:
        parse_entry(entry, "e")
    assert str(info.value) == f"e.{field}: must be {what}, got {value!r}"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("anchor_id", "", ".anchor_id: must be an anchor id, got ''"),
        ("key_id", "XY", ".key_id: must be 16 lowercase hex characters, got 'XY'"),
        ("entry", 5, ".entry: expected an object, got a number"),
        ("extra", 1, "unknown field"),
    ],
)
def test_local_anchor_fields_are_named(field: str, value: Any, message: str) -> None:
    doc = load_vector("valid/leaf0-of-3.json")
    doc["branches"][0]["ops"][-1]["anchors"][0][field] = value
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert message in str(info.value) and "anchors[0]" in str(info.value)


_FULL_TREE = {"window_id": "w", "tree_index": 0, "leaf_index": 0, "tree_size": 1}


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (5, "tree: expected an object, got a number"),
        ({"window_id": "w"}, "tree: missing field(s): leaf_index, tree_index, tree_size"),
        ({**_FULL_TREE, "x": 1}, "tree: unknown field(s): x"),
        ({**_FULL_TREE, "window_id": "w w"}, "tree.window_id: must be an id of [A-Za-z0-9._:-]{1,64}, got 'w w'"),
        ({**_FULL_TREE, "tree_index": 2**31}, f"tree.tree_index: must be an integer in [0, {2**31 - 1}], got {2**31}"),
        ({**_FULL_TREE, "tree_index": -1}, f"tree.tree_index: must be an integer in [0, {2**31 - 1}], got -1"),
        ({**_FULL_TREE, "leaf_index": 2**32}, f"tree.leaf_index: must be an integer in [0, {2**32 - 1}], got {2**32}"),
        ({**_FULL_TREE, "tree_size": 0}, f"tree.tree_size: must be an integer in [1, {2**32}], got 0"),
        ({**_FULL_TREE, "leaf_index": 3, "tree_size": 3}, "tree.leaf_index: 3 is outside a tree of 3 leaves"),
    ],
)
def test_tree_fields_are_named_with_their_bounds(tree: Any, message: str) -> None:
    doc = load_vector("valid/aggregated.json")
    doc["tree"] = tree
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value) == message


def test_the_largest_tree_index_and_leaf_index_are_read() -> None:
    doc = load_vector("valid/aggregated.json")
    doc["tree"] = {**_FULL_TREE, "tree_index": 2**31 - 1, "leaf_index": 2**32 - 1, "tree_size": 2**32}
    tree = parse_receipt(doc).tree
    assert tree is not None and (tree.tree_index, tree.leaf_index, tree.tree_size) == (2**31 - 1, 2**32 - 1, 2**32)


def _with_branch(change: Any) -> dict[str, Any]:
    doc = load_vector("valid/aggregated.json")
    change(doc["branches"][0])
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("ops"), "branches[0]: missing field(s): ops"),
        (lambda b: b.update(x=1, y=2), "branches[0]: unknown field(s): x, y"),
        (lambda b: b.update(label="a b"), "branches[0].label: must be a label of [A-Za-z0-9_.-]{1,64}, got 'a b'"),
        (lambda b: b.update(ops=[]), "branches[0].ops: must be a non-empty list"),
        (lambda b: b.update(ops={}), "branches[0].ops: must be a non-empty list"),
        (lambda b: b.update(ops="ops"), "branches[0].ops: must be a non-empty list"),
    ],
)
def test_branch_fields_are_named(change: Any, message: str) -> None:
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(_with_branch(change))
    assert str(info.value) == message


def test_a_branch_that_is_not_an_object_is_named() -> None:
    doc = load_vector("valid/aggregated.json")
    doc["branches"] = [5]
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value) == "branches[0]: expected an object, got a number"


def test_a_branch_without_label_has_none() -> None:
    r = parse_receipt(_with_branch(lambda b: b.pop("label")))
    assert r.branches[0].label is None
    assert "label" not in receipt_to_dict(r)["branches"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(branches=[], state="pending"), "tree: a pending receipt (no branches) has no tree yet"),
        (lambda d: d.pop("tree"), "tree: required once the receipt has a branch"),
        (
            lambda d: d.update(state="anchored"),
            "state: says 'anchored' but the receipt's content makes it 'aggregated'",
        ),
        (lambda d: d.update(state="pending"), "state: says 'pending' but the receipt's content makes it 'aggregated'"),
    ],
)
def test_the_state_must_match_the_content(change: Any, message: str) -> None:
    doc = load_vector("valid/aggregated.json")
    change(doc)
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value) == message


def test_a_branch_without_anchors_is_aggregated_even_with_no_target_pending() -> None:
    doc = load_vector("valid/aggregated.json")
    doc["pending_anchors"] = []
    assert parse_receipt(doc).state == "aggregated"
