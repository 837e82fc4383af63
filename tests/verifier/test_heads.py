"""The indexed heads tree, its head proofs, RFC 9162 consistency proofs and transition proofs (spec §14.5-§14.6)."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from receipt_service.transition import build_transition, successor_heads
from receipt_verifier.errors import LimitExceededError, MalformedReceiptError, VerificationError
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import (
    EMPTY_ROOT,
    SENTINEL,
    ZERO_KEY,
    HeadsError,
    IndexedHeads,
    TransitionError,
    check_indexed_proof,
    check_transition,
    empty_heads,
    indexed_leaf,
    subject_key,
)
from receipt_verifier.merkle import MerkleTree, consistency_proof, verify_consistency
from tests.conftest import ROOT, VECTORS

# certificate-transparency merkle_tree_test: the roots of the first n of its 8 leaves, and consistency proofs.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_CONSISTENCY = {
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def _hashes(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


# -- consistency proofs (RFC 9162 §2.1.4) ----------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), sorted(CT_CONSISTENCY))
def test_consistency_known_answers(m: int, n: int) -> None:
    hashes = [leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES[:n]]
    proof = consistency_proof(hashes, m)
    assert [h.hex() for h in proof] == CT_CONSISTENCY[(m, n)]
    old, new = MerkleTree.from_leaf_hashes(hashes[:m]).root, MerkleTree.from_leaf_hashes(hashes).root
    verify_consistency(m, n, old, new, proof)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 33, 64])
def test_consistency_verifies_against_pymerkle_roots(n: int) -> None:
    # pymerkle's consistency proofs take another form than RFC 9162's; its roots are the independent witness
    data = [random.Random(n).randbytes(16) + bytes([i]) for i in range(n)]
    theirs = InmemoryTree(algorithm="sha256")
    for d in data:
        theirs.append_entry(d)
    hashes = [leaf_hash(d) for d in data]
    for m in range(1, n + 1):
        proof = consistency_proof(hashes, m)
        verify_consistency(m, n, theirs.get_root(m), theirs.get_root(n), proof)
        if m < n:
            with pytest.raises(ValueError, match="new root"):
                verify_consistency(m, n, theirs.get_root(m), theirs.get_root(n - 1), proof)


@settings(max_examples=150)
@given(st.integers(1, 300), st.integers(0, 300), st.data())
def test_consistency_roundtrip_and_any_flip_fails(m: int, extra: int, data: st.DataObject) -> None:
    n = m + extra
    hashes = _hashes(n)
    old, new = MerkleTree.from_leaf_hashes(hashes[:m]).root, MerkleTree.from_leaf_hashes(hashes).root
    proof = consistency_proof(hashes, m)
    verify_consistency(m, n, old, new, proof)
    if not proof:
        assert m == n
        return
    i = data.draw(st.integers(0, len(proof) - 1))
    bad = [*proof[:i], _flip(proof[i]), *proof[i + 1 :]]
    with pytest.raises(ValueError):
        verify_consistency(m, n, old, new, bad)
    with pytest.raises(ValueError):
        verify_consistency(m, n, old, new, proof[:-1])
    with pytest.raises(ValueError):
        verify_consistency(m, n, old, new, [*proof, proof[0]])
    with pytest.raises(ValueError):
        verify_consistency(m, n + 1, old, MerkleTree.from_leaf_hashes(_hashes(n + 1)).root, proof)


def test_consistency_edge_cases() -> None:
    hashes = _hashes(5)
    root = MerkleTree.from_leaf_hashes(hashes).root
    assert consistency_proof(hashes, 5) == []
    verify_consistency(5, 5, root, root, [])
    with pytest.raises(ValueError, match="empty consistency proof"):
        verify_consistency(5, 5, root, root, [root])
    with pytest.raises(ValueError, match="different roots"):
        verify_consistency(5, 5, root, _flip(root), [])
    with pytest.raises(ValueError, match="no consistency proof"):
        verify_consistency(0, 5, EMPTY_ROOT, root, [])
    with pytest.raises(ValueError, match="no consistency proof"):
        verify_consistency(5, 4, root, root, [])
    with pytest.raises(ValueError, match="is empty"):
        verify_consistency(4, 5, MerkleTree.from_leaf_hashes(hashes[:4]).root, root, [])
    for bad in (0, 6):
        with pytest.raises(ValueError, match="needs 1 <="):
            consistency_proof(hashes, bad)


# -- the indexed heads tree (§14.5) ----------------------------------------------------------------------------


def _entries(n: int, seed: int = 0) -> list[tuple[bytes, int, bytes]]:
    rng = random.Random(seed)
    return [(subject_key(f"s-{seed}-{i}"), rng.randint(1, 9), rng.randbytes(32)) for i in range(n)]


def test_leaf_layout_and_sentinel() -> None:
    key, nxt, root = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    leaf = indexed_leaf(key, nxt, 258, root)
    assert len(leaf) == 104
    assert leaf == key + nxt + bytes([0, 0, 0, 0, 0, 0, 1, 2]) + root
    assert bytes(72) + hashlib.sha256(b"").digest() == SENTINEL
    heads = empty_heads()
    assert (heads.size, heads.root) == (1, leaf_hash(SENTINEL))
    assert heads.leaf(0) == (ZERO_KEY, ZERO_KEY, 0, EMPTY_ROOT)


@settings(max_examples=40)
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(1, 2**64 - 1)), max_size=40))
def test_next_pointers_and_root(items: list[tuple[bytes, int]]) -> None:
    seen: set[bytes] = {ZERO_KEY}
    entries = []
    for key, size in items:
        if key not in seen:
            seen.add(key)
            entries.append((key, size, hashlib.sha256(key).digest()))
    heads = IndexedHeads(entries)
    assert heads.size == len(entries) + 1
    assert heads.entries() == entries
    ordered = sorted(seen)
    for i in range(heads.size):
        key, nxt, size, root = heads.leaf(i)
        pos = ordered.index(key)
        assert nxt == (ordered[pos + 1] if pos + 1 < len(ordered) else ZERO_KEY)
        assert heads.index_of(key) == i
        assert heads.value(i) == indexed_leaf(key, nxt, size, root)
    theirs = InmemoryTree(algorithm="sha256")
    for i in range(heads.size):
        theirs.append_entry(heads.value(i))
    assert heads.root == theirs.get_root()


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([(ZERO_KEY, 1, EMPTY_ROOT)], "not all zeros"),
        ([(b"\x01" * 32, 0, EMPTY_ROOT)], "1 to 2"),
        ([(b"\x01" * 32, 1, b"short")], "32 bytes"),
        ([(b"\x01" * 32, 1, EMPTY_ROOT), (b"\x01" * 32, 2, EMPTY_ROOT)], "twice"),
    ],
)
def test_heads_refuse_bad_entries(entries: list[tuple[bytes, int, bytes]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IndexedHeads(entries)


@settings(max_examples=30)
@given(st.integers(0, 60), st.integers(0, 1000))
def test_member_and_absence_proofs(n: int, seed: int) -> None:
    subjects = [f"s-{seed}-{i}" for i in range(n)]
    entries = _entries(n, seed)
    heads = IndexedHeads(entries)
    for subject, (_, size, root) in zip(subjects, entries, strict=True):
        proof = json.loads(json.dumps(heads.prove(subject)))
        assert set(proof) == {"member"}
        assert check_indexed_proof(subject, proof, heads.root, heads.size) == (size, root)
    for i in range(5):
        absent = f"absent-{seed}-{i}"
        proof = heads.prove(absent)
        assert set(proof) == {"absent"}
        assert check_indexed_proof(absent, proof, heads.root, heads.size) == (0, EMPTY_ROOT)


def _heads_and_proofs() -> tuple[IndexedHeads, dict[str, Any], dict[str, Any]]:
    heads = IndexedHeads(_entries(9, 7))
    return heads, heads.prove("s-7-3"), heads.prove("nobody")


Tamper = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Any) -> Tamper:
    def go(proof: dict[str, Any]) -> None:
        node: Any = proof
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return go


@pytest.mark.parametrize(
    ("which", "tamper", "error", "match"),
    [
        ("member", _set(("member", "size"), 99), HeadsError, "does not lead to the anchored heads root"),
        ("member", _set(("member", "next"), "00" * 32), HeadsError, "does not lead"),
        ("member", _set(("member", "path", 0), "11" * 32), HeadsError, "does not lead"),
        ("member", _set(("member", "index"), 9), HeadsError, "does not lead|needs"),
        ("member", _set(("member", "index"), 10), HeadsError, "outside a heads tree of 10"),
        ("member", lambda p: p["member"]["path"].pop(), HeadsError, "audit path has"),
        ("member", _set(("member", "key"), "AB" * 32), MalformedReceiptError, r"member\.key"),
        ("member", _set(("member", "size"), True), MalformedReceiptError, r"member\.size"),
        ("member", lambda p: p["member"].pop("next"), MalformedReceiptError, "next"),
        ("member", _set(("member", "extra"), 1), MalformedReceiptError, "exactly the members"),
        ("absent", _set(("absent", "low", "next"), "ff" * 32), HeadsError, "does not lead"),
        ("absent", _set(("absent", "low", "root"), "00" * 32), HeadsError, "does not lead"),
        ("absent", _set(("absent", "left"), None), MalformedReceiptError, "head proof absent"),
        ("absent", lambda p: p.update(member=p["absent"]["low"]), MalformedReceiptError, "head proof"),
    ],
)
def test_tampered_head_proofs_fail(which: str, tamper: Tamper, error: type[Exception], match: str) -> None:
    heads, member, absent = _heads_and_proofs()
    subject = "s-7-3" if which == "member" else "nobody"
    proof = copy.deepcopy(member if which == "member" else absent)
    assert check_indexed_proof(subject, copy.deepcopy(proof), heads.root, heads.size)
    tamper(proof)
    with pytest.raises(error, match=match):
        check_indexed_proof(subject, proof, heads.root, heads.size)


def test_member_of_another_subject_and_absence_of_a_present_one_fail() -> None:
    heads, member, _ = _heads_and_proofs()
    with pytest.raises(HeadsError, match="another subject's"):
        check_indexed_proof("s-7-4", member, heads.root, heads.size)
    # the true low leaf of a present subject: it points at the subject, so it does not bracket it
    key = subject_key("s-7-3")
    low = heads.low_index(key)
    assert heads.leaf(low)[1] == key
    forged = {"absent": {"low": heads._member(low)}}
    with pytest.raises(HeadsError, match="does not bracket"):
        check_indexed_proof("s-7-3", forged, heads.root, heads.size)
    # and the subject's own leaf as the low one
    with pytest.raises(HeadsError, match="does not bracket"):
        check_indexed_proof("s-7-3", {"absent": {"low": member["member"]}}, heads.root, heads.size)


def test_empty_heads_prove_every_subject_absent() -> None:
    heads = empty_heads()
    proof = heads.prove("anyone")
    assert proof["absent"]["low"]["index"] == 0
    assert proof["absent"]["low"]["path"] == []
    assert check_indexed_proof("anyone", proof, heads.root, heads.size) == (0, EMPTY_ROOT)
    with pytest.raises(HeadsError, match="does not lead"):
        check_indexed_proof("anyone", proof, _flip(heads.root), heads.size)


# -- transition proofs (§14.6) -------------------------------------------------------------------------------


def _log(key: bytes, n: int) -> list[bytes]:
    """A subject's log: entry i is fixed by (key, i), so a longer log extends a shorter one."""
    return [hashlib.sha256(key + i.to_bytes(4, "big")).digest() for i in range(n)]


def _log_root(key: bytes, n: int) -> bytes:
    return MerkleTree.from_commitments(_log(key, n)).root


def _grown(old: IndexedHeads, grow: dict[bytes, int], new: dict[bytes, int]) -> tuple[IndexedHeads, dict[str, Any]]:
    """``old`` (logs by ``_log``) with logs grown to the sizes in ``grow`` and new subjects of the sizes in ``new``."""
    heads = {k: (n, _log_root(k, n)) for k, n in (grow | new).items()}
    successor = successor_heads(old, heads)
    consistency = {}
    for k, n in grow.items():
        index = old.index_of(k)
        assert index is not None
        size = old.leaf(index)[2]
        if n > size:
            consistency[k] = consistency_proof([leaf_hash(x) for x in _log(k, n)], size)
    return successor, build_transition(old, successor, consistency)


def _check(old: IndexedHeads, new: IndexedHeads, proof: Any) -> Any:
    return check_transition(old.root, old.size, new.root, new.size, proof)


def _heads_of(keys: list[bytes], sizes: list[int]) -> IndexedHeads:
    return IndexedHeads([(k, n, _log_root(k, n)) for k, n in zip(keys, sizes, strict=True)])


def test_transition_summary_names_every_changed_log() -> None:
    keys = [subject_key(f"t-{i}") for i in range(20)]
    old = _heads_of(keys, [1 + i % 4 for i in range(20)])
    new_keys = [subject_key(f"new-{i}") for i in range(3)]
    new, proof = _grown(old, {keys[3]: 9, keys[11]: 7}, {k: 2 for k in new_keys})
    summary = _check(old, new, json.loads(json.dumps(proof)))
    assert (summary.updated, summary.inserted) == (2, 3)
    assert summary.logs[:2] == ((keys[3], 4, 9), (keys[11], 4, 7))  # by leaf index
    assert summary.logs[2:] == tuple((k, 0, 2) for k in sorted(new_keys))


def test_genesis_and_empty_transitions() -> None:
    keys = [subject_key(f"g-{i}") for i in range(5)]
    new, proof = _grown(empty_heads(), {}, {k: 1 for k in keys})
    assert [c["index"] for c in proof["changed"]] == [0]  # the sentinel, as the first insert's low leaf
    assert [x["low"] for x in proof["inserted"]] == [0, 1, 2, 3, 4]  # each insert is the next one's low leaf
    assert proof["nodes"] == []
    assert _check(empty_heads(), new, proof).inserted == 5
    same = build_transition(new, new, {})
    assert same == {"old_size": 6, "new_size": 6, "changed": [], "inserted": [], "nodes": []}
    assert _check(new, new, same).logs == ()
    with pytest.raises(TransitionError, match="the new heads root does not follow"):
        check_transition(new.root, new.size, empty_heads().root, new.size, same)


def test_a_transition_from_no_heads_at_all_is_refused() -> None:
    """Check 1 of spec section 14.6: the heads always hold the sentinel, so old_size 0 is no state to grow from."""
    none = {"old_size": 0, "new_size": 0, "changed": [], "inserted": [], "nodes": []}
    root = empty_heads().root
    with pytest.raises(TransitionError, match="old_size must be at least 1"):
        check_transition(root, 0, root, 0, none)


def _proof_values(proof: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every scalar of a proof with its path."""
    if isinstance(proof, dict):
        for k, v in proof.items():
            yield from _proof_values(v, (*path, k))
    elif isinstance(proof, list):
        for i, v in enumerate(proof):
            yield from _proof_values(v, (*path, i))
    else:
        yield path, proof


def _replace(proof: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(proof)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


@settings(max_examples=60)
@given(
    st.integers(0, 40),
    st.integers(0, 2**32),
    st.lists(st.integers(0, 39), max_size=8),
    st.integers(0, 8),
    st.data(),
)
def test_built_transitions_check_and_any_flip_fails(
    n: int, seed: int, grow_at: list[int], n_new: int, data: st.DataObject
) -> None:
    rng = random.Random(seed)
    keys = [subject_key(f"h-{seed}-{i}") for i in range(n)]
    old = _heads_of(keys, [rng.randint(1, 20) for _ in keys])
    grow = {keys[i]: old.leaf(i + 1)[2] + rng.randint(1, 20) for i in grow_at if i < n}
    new, proof = _grown(old, grow, {subject_key(f"n-{seed}-{j}"): rng.randint(1, 5) for j in range(n_new)})
    summary = _check(old, new, proof)
    assert (summary.updated, summary.inserted) == (len(grow), n_new)
    values = list(_proof_values(proof))
    path, value = data.draw(st.sampled_from(values))
    if isinstance(value, str):
        changed = f"{int(value[0], 16) ^ 1:x}{value[1:]}"
    else:
        changed = value + data.draw(st.sampled_from([-1, 1]))
        if changed < 0:
            changed = value + 1
    with pytest.raises(VerificationError):
        _check(old, new, _replace(proof, path, changed))


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda p: p.pop("nodes"), "transition proof: expected exactly the members"),
        (lambda p: p.update(extra=1), "transition proof: expected exactly the members"),
        (lambda p: p.update(old_size="3"), "transition proof: old_size"),
        (lambda p: p.update(new_size=-1), "transition proof: new_size"),
        (lambda p: p.update(changed={}), "transition proof: changed must be a list"),
        (lambda p: p["changed"][0].update(new_root="AB" * 32), r"changed\[0\]\.new_root"),
        (lambda p: p["changed"][0].update(consistency=["00"]), r"changed\[0\]\.consistency\[0\]"),
        (lambda p: p["changed"][0].pop("next"), r"changed\[0\]: expected exactly"),
        (lambda p: p["changed"][0].update(index=False), r"changed\[0\]\.index"),
        (lambda p: p["inserted"][0].update(low=None), r"inserted\[0\]\.low"),
        (lambda p: p["inserted"][0].update(key="zz" * 32), r"inserted\[0\]\.key"),
        (lambda p: p["nodes"][0].pop(), r"nodes\[0\] must be \[start, width, hash\]"),
        (lambda p: p["nodes"][0].__setitem__(1, 1.0), r"nodes\[0\] width"),
    ],
)
def test_malformed_transition_proofs_name_the_member(tamper: Callable[[dict[str, Any]], Any], match: str) -> None:
    keys = [subject_key(f"m-{i}") for i in range(10)]
    old = _heads_of(keys, [2] * 10)
    new, proof = _grown(old, {keys[4]: 3}, {subject_key("m-new"): 1})
    tamper(proof)
    with pytest.raises(MalformedReceiptError, match=match):
        _check(old, new, proof)


def test_transition_lists_are_bounded() -> None:
    proof = {"old_size": 1, "new_size": 1, "changed": [], "inserted": [], "nodes": [[0, 1, "00" * 32]] * 1_000_001}
    with pytest.raises(LimitExceededError, match="nodes holds more than 1,000,000"):
        check_transition(empty_heads().root, 1, empty_heads().root, 1, proof)


# -- the spec's vectors ----------------------------------------------------------------------------------------


def _generator() -> Any:
    sys.path.insert(0, str(ROOT / "proof_spec" / "tools"))
    try:
        import make_transition_vectors
    finally:
        sys.path.pop(0)
    return make_transition_vectors


def test_transition_vectors_are_current() -> None:
    assert _generator().render() == (VECTORS / "transition.json").read_text()


DOC: dict[str, Any] = json.loads((VECTORS / "transition.json").read_text())


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"] for c in DOC["cases"]])
def test_transition_vector(case: dict[str, Any]) -> None:
    def run() -> Any:
        return check_transition(
            bytes.fromhex(case["old_root"]),
            case["old_size"],
            bytes.fromhex(case["heads_root"]),
            case["heads_size"],
            case["proof"],
        )

    if case["valid"]:
        assert case["reason"] is None
        summary = run()
        assert summary.inserted == len(case["proof"]["inserted"])
    else:
        with pytest.raises(TransitionError) as info:
            run()
        assert case["reason"] in str(info.value)


def test_vectors_cover_every_check() -> None:
    reasons = " | ".join(c["reason"] for c in DOC["cases"] if not c["valid"])
    for phrase in (
        "new_size is not old_size plus the inserted count",
        "old_size is not the tip's heads size",
        "new_size is not the window's heads size",
        "changed leaves repeat or are out of order",
        "inserted keys repeat or are out of order",
        "nodes repeat or are out of order",
        "the old heads root is not the tip's",
        "is not used",
        "the proof lacks node",
        "shrank",
        "changed without growing",
        "the sentinel leaf cannot hold a log",
        "the consistency proof of key",
        "is not in the proof",
        "is not new: low leaf",
        "a new subject's log must hold a record",
        "the new heads root does not follow",
    ):
        assert phrase in reasons
    valid = {c["name"] for c in DOC["cases"] if c["valid"]}
    assert {"updates-and-inserts", "genesis", "no-change"} <= valid
    base = next(c for c in DOC["cases"] if c["name"] == "updates-and-inserts")["proof"]
    assert any(x["low"] >= base["old_size"] for x in base["inserted"])  # an insert whose low leaf is an insert
    assert base["changed"] and any(c["new_size"] > c["size"] for c in base["changed"])
