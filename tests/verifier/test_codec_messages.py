"""Every error the codec raises, with its whole message: the place (a JSON path a user can follow) and
what the value must be. One table per part of a receipt; each row changes one thing in a valid vector."""

from __future__ import annotations

from typing import Any

import pytest

from receipt_verifier import (
    LimitExceededError,
    Limits,
    MalformedReceiptError,
    UnknownContextError,
    codec,
    parse_receipt,
)
from receipt_verifier.codec import parse_anchor
from receipt_verifier.errors import Error
from receipt_verifier.model import CONTEXT_V1, CONTEXT_V2, FabricAnchor, LocalAnchor
from tests.conftest import load_vector

V1, V2, FABRIC, OTHER = (
    "valid/leaf0-of-3.json",
    "valid/v2-subject.json",
    "valid/local-and-fabric.json",
    "valid/unknown-anchor-type.json",
)
ANCHORS = "branches[0].ops[10].anchors"  # leaf 0 of 3: the anchors op is ops[10]


def _ops(d: dict[str, Any]) -> list[Any]:
    ops: list[Any] = d["branches"][0]["ops"]
    return ops


def _anchor(d: dict[str, Any], i: int = 0) -> dict[str, Any]:
    anchor: dict[str, Any] = _ops(d)[-1]["anchors"][i]
    return anchor


def _fabric(d: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in _ops(d)[-1]["anchors"] if a["type"] == "fabric")


def _fabric_where(d: dict[str, Any]) -> str:
    ops = _ops(d)
    i = next(j for j, a in enumerate(ops[-1]["anchors"]) if a["type"] == "fabric")
    return f"branches[0].ops[{len(ops) - 1}].anchors[{i}]"


def _nest(d: dict[str, Any], depth: int) -> None:
    branch = d["branches"][0]
    for _ in range(depth):
        child = {"ops": [{"op": "sha-256"}]}
        branch["branches"] = [child]
        branch = child


CASES: list[tuple[str, str, Any, type[Error], str]] = [  # (name, vector or '' for a number, change, error, message)
    # the receipt object
    ("not an object", "", lambda d: None, MalformedReceiptError, "receipt: expected an object, got a number"),
    (
        "another context",
        V1,
        lambda d: d.update({"@context": "https://example.org/x"}),
        UnknownContextError,
        f"@context 'https://example.org/x' is not supported; this verifier knows {CONTEXT_V1!r} and {CONTEXT_V2!r}",
    ),
    ("a missing field", V1, lambda d: d.pop("hash"), MalformedReceiptError, "receipt: missing field(s): hash"),
    (
        "two missing fields",
        V1,
        lambda d: (d.pop("hash"), d.pop("proof_id")),
        MalformedReceiptError,
        "receipt: missing field(s): hash, proof_id",
    ),
    ("unknown fields", V1, lambda d: d.update(y=1, x=2), MalformedReceiptError, "receipt: unknown field(s): x, y"),
    (
        "a v1 receipt with a domain",
        V1,
        lambda d: d.update(domain="x"),
        MalformedReceiptError,
        "receipt: unknown field(s): domain",
    ),
    (
        "a v2 receipt without domain",
        V2,
        lambda d: d.pop("domain"),
        MalformedReceiptError,
        "receipt: missing field(s): domain",
    ),
    (
        "another type",
        V1,
        lambda d: d.update(type="Other"),
        MalformedReceiptError,
        "type: must be 'HealthReceipt', got 'Other'",
    ),
    (
        "another state",
        V1,
        lambda d: d.update(state="done"),
        MalformedReceiptError,
        "state: must be one of pending, aggregated, anchored, got 'done'",
    ),
    (
        "an upper-case hash",
        V1,
        lambda d: d.update(hash="AB" * 32),
        MalformedReceiptError,
        f"hash: must be a SHA-256 hash in 64 lowercase hex characters, got {('AB' * 32)!r}",
    ),
    (
        "a long bad hash is cut at 80 characters",
        V1,
        lambda d: d.update(hash="x" * 200),
        MalformedReceiptError,
        "hash: must be a SHA-256 hash in 64 lowercase hex characters, got " + repr("x" * 200)[:80],
    ),
    (
        "a proof id that is no UUID",
        V1,
        lambda d: d.update(proof_id="p-1"),
        MalformedReceiptError,
        "proof_id: must be a lowercase UUID, got 'p-1'",
    ),
    (
        "a receive time in another form",
        V1,
        lambda d: d.update(hash_received="2026-01-01T00:00:00Z"),
        MalformedReceiptError,
        "hash_received: must be YYYY-MM-DDTHH:MM:SS.fffffffZ, got '2026-01-01T00:00:00Z'",
    ),
    (
        "branches as an object",
        V1,
        lambda d: d.update(branches={}),
        MalformedReceiptError,
        "branches: must be a list of branches",
    ),
    # v2 bindings
    (
        "a bad domain",
        V2,
        lambda d: d.update(domain="Medical"),
        MalformedReceiptError,
        "domain: must be a domain name (lowercase letters, digits, '-'), got 'Medical'",
    ),
    (
        "a subject without its sequence number",
        V2,
        lambda d: d.pop("subject_seq"),
        MalformedReceiptError,
        "subject: subject and subject_seq come together: both or neither",
    ),
    (
        "a short subject",
        V2,
        lambda d: d.update(subject="short"),
        MalformedReceiptError,
        "subject: must be 16-128 characters of A-Z a-z 0-9 . _ : % -, got 'short'",
    ),
    (
        "a negative sequence number",
        V2,
        lambda d: d.update(subject_seq=-1),
        MalformedReceiptError,
        f"subject_seq: must be an integer in [0, {2**53 - 1}], got -1",
    ),
    # ops
    (
        "an op with two keys",
        V1,
        lambda d: _ops(d).__setitem__(3, {"op": "sha-256", "l": "00"}),
        MalformedReceiptError,
        "branches[0].ops[3]: an op is an object with exactly one of l, r, op, anchors",
    ),
    (
        "an op that is a list",
        V1,
        lambda d: _ops(d).__setitem__(3, ["op"]),
        MalformedReceiptError,
        "branches[0].ops[3]: an op is an object with exactly one of l, r, op, anchors",
    ),
    (
        "another hash function",
        V1,
        lambda d: _ops(d).__setitem__(1, {"op": "sha-512"}),
        MalformedReceiptError,
        "branches[0].ops[1].op: unsupported hash 'sha-512' (v1 knows only sha-256)",
    ),
    (
        "an unknown op",
        V1,
        lambda d: _ops(d).__setitem__(1, {"x": "sha-256"}),
        MalformedReceiptError,
        "branches[0].ops[1]: unknown op 'x'",
    ),
    (
        "an empty l value",
        V1,
        lambda d: _ops(d).__setitem__(2, {"l": ""}),
        MalformedReceiptError,
        "branches[0].ops[2].l: must be a string of 1 to 512 characters",
    ),
    (
        "an r value of 513 characters",
        V1,
        lambda d: _ops(d).__setitem__(4, {"r": "a" * 513}),
        MalformedReceiptError,
        "branches[0].ops[4].r: must be a string of 1 to 512 characters",
    ),
    (
        "an r value that is a number",
        V1,
        lambda d: _ops(d).__setitem__(4, {"r": 7}),
        MalformedReceiptError,
        "branches[0].ops[4].r: must be a string of 1 to 512 characters",
    ),
    (
        "an empty anchors list",
        V1,
        lambda d: _ops(d)[10].update(anchors=[]),
        MalformedReceiptError,
        f"{ANCHORS}: must be a list of 1 to 16 anchors",
    ),
    (
        "the same anchor twice",
        V1,
        lambda d: _ops(d)[10]["anchors"].append(dict(_anchor(d))),
        MalformedReceiptError,
        f"{ANCHORS}: lists the same anchor (type and anchor_id) twice",
    ),
    (
        "an anchor that is not an object",
        V1,
        lambda d: _ops(d)[10].update(anchors=[5]),
        MalformedReceiptError,
        f"{ANCHORS}[0]: expected an object, got a number",
    ),
    # local anchors and their entries
    (
        "a local anchor without signature",
        V1,
        lambda d: _anchor(d).pop("signature"),
        MalformedReceiptError,
        f"{ANCHORS}[0]: missing field(s): signature",
    ),
    (
        "a local anchor with an upper-case signature",
        V1,
        lambda d: _anchor(d).update(signature="AB" * 64),
        MalformedReceiptError,
        f"{ANCHORS}[0].signature: must be 128 lowercase hex characters, got {('AB' * 64)!r:.80}",
    ),
    (
        "an entry of version 4",
        V1,
        lambda d: _anchor(d)["entry"].update(v=4),
        MalformedReceiptError,
        f"{ANCHORS}[0].entry.v: unsupported ledger entry version 4",
    ),
    (
        "an entry version that is true",
        V1,
        lambda d: _anchor(d)["entry"].update(v=True),
        MalformedReceiptError,
        f"{ANCHORS}[0].entry.v: unsupported ledger entry version True",
    ),
    (
        "an entry with an unknown field",
        V1,
        lambda d: _anchor(d)["entry"].update(x=1),
        MalformedReceiptError,
        f"{ANCHORS}[0].entry: unknown field(s): x",
    ),
    (
        "a v1 entry with the heads of a v2 one",
        V1,
        lambda d: _anchor(d)["entry"].update(heads_size=1),
        MalformedReceiptError,
        f"{ANCHORS}[0].entry: unknown field(s): heads_size",
    ),
    (
        "an entry that is a list",
        V1,
        lambda d: _anchor(d).update(entry=[]),
        MalformedReceiptError,
        f"{ANCHORS}[0].entry: expected an object, got an array",
    ),
    # fabric anchors
    (
        "a fabric anchor without chaincode",
        FABRIC,
        lambda d: _fabric(d).pop("chaincode"),
        MalformedReceiptError,
        "{fabric}: missing field(s): chaincode",
    ),
    (
        "a fabric anchor with an unknown field",
        FABRIC,
        lambda d: _fabric(d).update(peer="p"),
        MalformedReceiptError,
        "{fabric}: unknown field(s): peer",
    ),
    (
        "fabric uris that are not a list",
        FABRIC,
        lambda d: _fabric(d).update(uris="https://x"),
        MalformedReceiptError,
        "{fabric}.uris: must be a list of at most 8 URI strings",
    ),
    (
        "an empty fabric uri",
        FABRIC,
        lambda d: _fabric(d).update(uris=[""]),
        MalformedReceiptError,
        "{fabric}.uris: must be a list of at most 8 URI strings",
    ),
    (
        "a fabric uri of 2049 characters",
        FABRIC,
        lambda d: _fabric(d).update(uris=["u" * 2049]),
        MalformedReceiptError,
        "{fabric}.uris: must be a list of at most 8 URI strings",
    ),
    (
        "a fabric channel with upper case",
        FABRIC,
        lambda d: _fabric(d).update(channel="Insurance"),
        MalformedReceiptError,
        "{fabric}.channel: must be a channel name, got 'Insurance'",
    ),
    (
        "a fabric anchor id with a space",
        FABRIC,
        lambda d: _fabric(d).update(anchor_id="a b"),
        MalformedReceiptError,
        "{fabric}.anchor_id: must be an anchor id, got 'a b'",
    ),
    (
        "a fabric block number that is a string",
        FABRIC,
        lambda d: _fabric(d).update(block_number="7"),
        MalformedReceiptError,
        f"{{fabric}}.block_number: must be an integer in [0, {2**63 - 1}], got '7'",
    ),
    (
        "a fabric key with a space",
        FABRIC,
        lambda d: _fabric(d).update(key="a b"),
        MalformedReceiptError,
        "{fabric}.key: must be a printable ledger key, got 'a b'",
    ),
    (
        "a fabric chaincode with a slash",
        FABRIC,
        lambda d: _fabric(d).update(chaincode="a/b"),
        MalformedReceiptError,
        "{fabric}.chaincode: must be a chaincode name, got 'a/b'",
    ),
    # anchors of other types
    (
        "an anchor without type",
        OTHER,
        lambda d: _anchor(d, 1).pop("type"),
        MalformedReceiptError,
        "branches[0].ops[{last}].anchors[1].type: must be an anchor type name, got None",
    ),
    (
        "an anchor without id",
        OTHER,
        lambda d: _anchor(d, 1).pop("anchor_id"),
        MalformedReceiptError,
        "branches[0].ops[{last}].anchors[1].anchor_id: must be a string of 1 to 512 characters",
    ),
]


@pytest.mark.parametrize(("name", "vector", "change", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_codec_error_is_named_whole(name: str, vector: str, change: Any, error: type[Error], message: str) -> None:
    doc: Any = load_vector(vector) if vector else 5
    change(doc)
    where = {"fabric": _fabric_where(load_vector(FABRIC)), "last": len(_ops(load_vector(OTHER))) - 1}
    with pytest.raises(error) as info:
        parse_receipt(doc)
    assert type(info.value) is error
    assert str(info.value) == message.format(**where)


@pytest.mark.parametrize(
    ("limits", "change", "message"),
    [
        (Limits(max_branches=0), lambda d: None, "branches: more than 0 branches"),
        (
            Limits(max_depth=2),
            lambda d: _nest(d, 2),
            "branches[0].branches[0].branches: branches nest deeper than 2 levels",
        ),
        (Limits(max_ops=10), lambda d: None, "branches[0].ops: the receipt has more than 10 ops"),
        (Limits(max_ops=11), lambda d: _nest(d, 1), "branches[0].branches[0].ops: the receipt has more than 11 ops"),
    ],
)
def test_each_limit_is_named_where_it_is_passed(limits: Limits, change: Any, message: str) -> None:
    doc = load_vector(V1)
    change(doc)
    with pytest.raises(LimitExceededError) as info:
        parse_receipt(doc, limits)
    assert str(info.value) == message


# ---------------------------------------------------------------------- edges and the local-anchor cache


def test_op_values_of_1_and_512_characters_and_16_anchors_are_read() -> None:
    doc = load_vector("valid/aggregated.json")
    _ops(doc).extend([{"l": "a"}, {"r": "b" * 512}])
    ops = parse_receipt(doc).branches[0].ops
    assert (ops[-2].kind, ops[-2].value, ops[-1].kind, len(ops[-1].value)) == ("l", "a", "r", 512)
    doc = load_vector(V1)
    _ops(doc)[10]["anchors"] = [dict(_anchor(doc))]
    assert len(parse_receipt(doc, Limits(max_anchors=1)).anchors()) == 1
    doc = load_vector(V1)
    assert len(parse_receipt(doc, Limits(max_branches=1)).branches) == 1


def test_a_branch_with_children_and_an_unknown_field_names_only_that_field() -> None:
    doc = load_vector("valid/aggregated.json")
    doc["branches"][0].update(branches=[], x=1)
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value) == "branches[0]: unknown field(s): x"


def test_a_fabric_anchor_without_uris_has_none() -> None:
    doc = load_vector(FABRIC)
    _fabric(doc).pop("uris", None)
    fabric = next(a for a in parse_receipt(doc).anchors() if isinstance(a, FabricAnchor))
    assert fabric.uris == ()


def test_an_anchor_parsed_alone_is_named_anchor() -> None:
    with pytest.raises(MalformedReceiptError) as info:
        parse_anchor({"type": "local"})
    assert str(info.value) == "anchor: missing field(s): anchor_id, entry, key_id, signature"
    with pytest.raises(MalformedReceiptError) as info:
        parse_anchor({"type": "local"}, "window.anchors[2]")
    assert str(info.value) == "window.anchors[2]: missing field(s): anchor_id, entry, key_id, signature"


def test_a_signature_that_is_not_text_is_named_not_cached() -> None:
    doc = load_vector(V1)
    _anchor(doc).update(signature=["ab"])
    with pytest.raises(MalformedReceiptError) as info:
        parse_receipt(doc)
    assert str(info.value) == f"{ANCHORS}[0].signature: must be 128 lowercase hex characters, got ['ab']"


def test_equal_local_anchors_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_LOCAL_CACHE", {})
    first, again = load_vector(V1), load_vector(V1)
    a = parse_receipt(first).anchors()[0]
    assert parse_receipt(again).anchors()[0] is a  # receipts of one tree share their ledger entry


def test_an_anchor_changed_in_place_after_parsing_is_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache keeps its own deep copy: editing the caller's object must not edit what it compares with."""
    monkeypatch.setattr(codec, "_LOCAL_CACHE", {})
    doc = load_vector(V1)
    before = parse_receipt(doc).anchors()[0]
    _anchor(doc)["entry"]["seq"] += 1
    after = parse_receipt(doc).anchors()[0]
    assert isinstance(before, LocalAnchor) and isinstance(after, LocalAnchor)
    assert after.entry.seq == before.entry.seq + 1


@pytest.mark.parametrize("field", ["v", "seq", "tree_index", "tree_size"])
def test_an_equal_entry_with_a_float_or_bool_is_not_taken_from_the_cache(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "_LOCAL_CACHE", {})
    doc = load_vector(V1)
    parse_receipt(load_vector(V1))
    entry = _anchor(doc)["entry"]
    entry[field] = float(entry[field]) if entry[field] != 1 else True  # == the int, but not an int
    with pytest.raises(MalformedReceiptError):
        parse_receipt(doc)


def test_the_local_anchor_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_LOCAL_CACHE", {})
    monkeypatch.setattr(codec, "LOCAL_CACHE_MAX", 2)
    docs = [load_vector(name) for name in ("valid/leaf0-of-3.json", "valid/single-leaf.json", "valid/v2-subject.json")]
    a = parse_receipt(docs[0]).anchors()[0]
    parse_receipt(docs[1])
    assert parse_receipt(load_vector("valid/leaf0-of-3.json")).anchors()[0] is a  # two fit
    parse_receipt(docs[2])  # a third: the cache starts over with it
    assert parse_receipt(load_vector("valid/leaf0-of-3.json")).anchors()[0] is not a
    assert len(codec._LOCAL_CACHE) == 2
