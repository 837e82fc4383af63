"""Subject logs and the heads tree: presence and absence proofs over random histories (pure)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_verifier.errors import HistoryError, MalformedReceiptError
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id, load_public_key_file
from receipt_verifier.logs import EMPTY_ROOT, frontier_append, frontier_root, log_root, record_leaf
from receipt_verifier.sorted_heads import HeadsTree, check_heads_proof

subjects = st.text(alphabet="abcdef0123456789:-", min_size=16, max_size=24)
heads_maps = st.dictionaries(subjects, st.integers(min_value=1, max_value=1000), max_size=40)


def _heads(sizes: dict[str, int]) -> dict[str, tuple[int, bytes]]:
    return {s: (n, hashlib.sha256(f"{s}:{n}".encode()).digest()) for s, n in sizes.items()}


@settings(max_examples=200, deadline=None)
@given(heads_maps, subjects)
def test_every_subject_is_proven_present_or_absent(sizes: dict[str, int], probe: str) -> None:
    heads = _heads(sizes)
    tree = HeadsTree(heads)
    for subject, head in heads.items():
        assert check_heads_proof(subject, tree.prove(subject), tree.root, tree.size) == head
    if probe not in heads:
        assert check_heads_proof(probe, tree.prove(probe), tree.root, tree.size) == (0, EMPTY_ROOT)


@settings(max_examples=100, deadline=None)
@given(heads_maps.filter(lambda m: len(m) >= 3))
def test_a_member_cannot_be_proven_absent(sizes: dict[str, int]) -> None:
    heads = _heads(sizes)
    tree = HeadsTree(heads)
    ordered = sorted(heads, key=lambda s: hashlib.sha256(s.encode()).digest())
    hidden = ordered[1]
    left, right = tree.prove(ordered[0])["member"], tree.prove(ordered[2])["member"]
    forged = {"absent": {"left": left, "right": right}}  # neighbours around the hidden one: not adjacent
    with pytest.raises(HistoryError, match="not adjacent"):
        check_heads_proof(hidden, forged, tree.root, tree.size)
    with pytest.raises(HistoryError, match="another subject's"):
        check_heads_proof(hidden, {"member": left}, tree.root, tree.size)


@settings(max_examples=100, deadline=None)
@given(heads_maps.filter(lambda m: len(m) >= 2), st.data())
def test_any_changed_proof_field_is_refused(sizes: dict[str, int], data: Any) -> None:
    heads = _heads(sizes)
    tree = HeadsTree(heads)
    subject = data.draw(st.sampled_from(sorted(heads)))
    proof = tree.prove(subject)
    field = data.draw(st.sampled_from(["size", "root", "index", "path"]))
    bad = copy.deepcopy(proof)
    m = bad["member"]
    if field == "size":
        m["size"] += 1
    elif field == "root":
        m["root"] = hashlib.sha256(b"x").hexdigest()
    elif field == "index":
        m["index"] = (m["index"] + 1) % tree.size
    else:
        m["path"] = m["path"][:-1] if m["path"] else [EMPTY_ROOT.hex()]
    with pytest.raises(HistoryError):
        check_heads_proof(subject, bad, tree.root, tree.size)


def test_an_empty_domain_proves_every_subject_absent() -> None:
    tree = HeadsTree({})
    assert tree.root == EMPTY_ROOT
    assert check_heads_proof("did:example:nobody-000", tree.prove("did:example:nobody-000"), EMPTY_ROOT, 0) == (
        0,
        EMPTY_ROOT,
    )


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=40), st.data())
def test_log_entries_bind_their_position(n: int, data: Any) -> None:
    rec = [(bytes([i]) * 16, bytes([i]) * 16, bytes([i]) * 32) for i in range(n)]
    leaves = [record_leaf(nc, p, h, "medical-history", "did:example:patient-01", i) for i, (nc, p, h) in enumerate(rec)]
    root = log_root(leaves)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    nc, p, h = rec[i]
    for other in ({"seq": i + 1}, {"subject": "did:example:patient-02"}, {"domain": "insurance"}):
        kw: dict[str, Any] = {"domain": "medical-history", "subject": "did:example:patient-01", "seq": i} | other
        moved = [*leaves[:i], record_leaf(nc, p, h, kw["domain"], kw["subject"], kw["seq"]), *leaves[i + 1 :]]
        assert log_root(moved) != root


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_a_compact_range_gives_the_log_root(n: int) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    frontier: list[bytes] = []
    for i, leaf in enumerate(leaves):
        frontier = frontier_append(frontier, i, leaf)
        assert len(frontier) == (i + 1).bit_count()
    assert frontier_root(frontier) == log_root(leaves)


HISTORY = Path(__file__).resolve().parents[2] / "proof_spec" / "vectors" / "history"


@pytest.mark.parametrize(
    "entry", json.loads((HISTORY / "manifest.json").read_text())["vectors"], ids=lambda e: e["file"]
)
def test_history_vectors(entry: dict[str, Any]) -> None:
    key = load_public_key_file(HISTORY / "../ledger-key.pem")
    doc = json.loads((HISTORY / entry["file"]).read_text())
    try:
        report, _ = verify_history(doc, {key_id(key): key}, as_of=datetime(2025, 11, 21, 9, tzinfo=UTC))
        problems = "; ".join(report.problems)
    except HistoryError as exc:
        problems = str(exc)
    if entry["complete"]:
        assert problems == ""
    else:
        assert entry["problem"] in problems


def test_history_schema_accepts_the_vectors_and_is_the_openapi_one() -> None:
    schema = json.loads((HISTORY / "../../history.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for entry in json.loads((HISTORY / "manifest.json").read_text())["vectors"]:
        validator.validate(json.loads((HISTORY / entry["file"]).read_text()))
    validator.validate(json.loads((HISTORY / "../fabric/history.json").read_text()))  # with Fabric blocks
    twice = json.loads((HISTORY / "complete.json").read_text())
    twice["window"]["anchors"] *= 2
    assert not validator.is_valid(twice)  # as the verifier: no anchor listed twice
    untimed = json.loads((HISTORY / "complete.json").read_text())
    untimed["window"]["window_end"] = "21 Nov 2025 08:02:01"
    assert not validator.is_valid(untimed)  # as the verifier: a window ends at an RFC 3339 UTC time
    openapi = json.loads((HISTORY / "../../../receipt_service/openapi.json").read_text())
    text = json.dumps({k: v for k, v in schema.items() if k not in ("$schema", "$id")})
    assert openapi["components"]["schemas"]["HistoryBundle"] == json.loads(
        text.replace('"#/$defs/', '"#/components/schemas/HistoryBundle/$defs/')
    )


def test_a_same_length_rewrite_is_a_fork_not_a_shrink() -> None:
    doc = json.loads((HISTORY / "complete.json").read_text())
    key = load_public_key_file(HISTORY / "../ledger-key.pem")
    old = copy.deepcopy(doc)
    leaves = base64.b64decode(old["log"]["leaves"])
    old["log"]["leaves"] = base64.b64encode(leaves[:32] + bytes(32) + leaves[64:]).decode()
    report, _ = verify_history(doc, {key_id(key): key}, previous=old, as_of=datetime(2025, 11, 21, 9, tzinfo=UTC))
    assert report.problems == [
        "forked log: record 1 differs from the older bundle's (the log was rewritten, it did not only grow)"
    ]


def test_a_previous_that_is_not_a_history_is_refused() -> None:
    doc = json.loads((HISTORY / "complete.json").read_text())
    key = load_public_key_file(HISTORY / "../ledger-key.pem")
    for previous in (["not", "a", "bundle"], dict(doc, type="Other"), dict(doc, subject="did:example:someone-else")):
        with pytest.raises(MalformedReceiptError, match="--previous"):
            verify_history(doc, {key_id(key): key}, previous=previous)


def _complete() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HISTORY / "complete.json").read_text())
    return doc


def _set(path: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value

    return change


_DROP = object()
MALFORMED = [
    ("log", "not an object"),
    ("log.size", -1),
    ("log.size", "3"),
    ("log.root", 5),
    ("log.hashes", "not base64!"),
    ("log.nonces", "AAAA"),  # 3 bytes: not a multiple of 16
    ("log.extra", _DROP),
    ("head_proof", {"member": {}, "absent": {}}),
    ("head_proof", ["member"]),
    ("head_proof.member.index", "0"),
    ("head_proof.member.size", 0),
    ("head_proof.member.key", "00"),
    ("head_proof.member.path", ["zz"]),
    ("head_proof.member.path", ["00"]),
    ("window", "not an object"),
    ("window.tree_index", -1),
    ("window.heads_size", "2"),
    ("window.root", 5),
    ("window.anchors", []),
    ("window.anchors", [{"type": "local"}] * 17),
    ("window.extra", 1),
    ("subject", 5),
]


@pytest.mark.parametrize(("path", "value"), MALFORMED, ids=[f"{p}={v!r:.20}" for p, v in MALFORMED])
def test_malformed_bundles_are_refused(path: str, value: Any) -> None:
    doc = _complete()
    if path == "log.extra":
        doc["log"]["extra"] = 1
    else:
        _set(path, value)(doc)
    key = load_public_key_file(HISTORY / "../ledger-key.pem")
    with pytest.raises((MalformedReceiptError, HistoryError)):
        verify_history(doc, {key_id(key): key}, as_of=datetime(2025, 11, 21, 9, tzinfo=UTC))


def test_absence_proofs_are_checked_at_both_ends() -> None:
    heads = {f"did:example:s-{i:04d}-padding": (1, bytes([i]) * 32) for i in range(4)}
    tree = HeadsTree(heads)
    keys = sorted(hashlib.sha256(s.encode()).digest() for s in heads)
    member0 = tree.prove(next(s for s in heads if hashlib.sha256(s.encode()).digest() == keys[0]))["member"]
    member_last = tree.prove(next(s for s in heads if hashlib.sha256(s.encode()).digest() == keys[-1]))["member"]
    # find probes below the first key and above the last one
    probes = [f"did:example:probe-{i:06d}" for i in range(5000)]
    low = next(p for p in probes if hashlib.sha256(p.encode()).digest() < keys[0])
    high = next(p for p in probes if hashlib.sha256(p.encode()).digest() > keys[-1])
    assert check_heads_proof(low, {"absent": {"left": None, "right": member0}}, tree.root, tree.size)[0] == 0
    assert check_heads_proof(high, {"absent": {"left": member_last, "right": None}}, tree.root, tree.size)[0] == 0
    with pytest.raises(HistoryError, match="must be leaf 0"):
        check_heads_proof(low, {"absent": {"left": None, "right": member_last}}, tree.root, tree.size)
    with pytest.raises(HistoryError, match="must be the last leaf"):
        check_heads_proof(high, {"absent": {"left": member0, "right": None}}, tree.root, tree.size)
    with pytest.raises(HistoryError, match="not between"):
        check_heads_proof(high, {"absent": {"left": None, "right": member0}}, tree.root, tree.size)
    with pytest.raises(HistoryError, match="outside a heads tree"):
        check_heads_proof(low, {"member": dict(member0, index=tree.size)}, tree.root, tree.size)
    with pytest.raises(HistoryError, match="no leaves but a root that is not empty"):
        check_heads_proof(low, {"absent": {"left": None, "right": None}}, tree.root, 0)
    assert HeadsTree({"did:example:s-zero-size-0001": (0, EMPTY_ROOT)}).size == 0  # an empty log is no head
