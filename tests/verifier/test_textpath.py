"""The one-pass path on a receipt's text agrees with decoding it and taking the general parser and walk."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receipt_service.ledger import LocalLedger
from receipt_verifier import Limits, MalformedReceiptError, Verifier, parse_receipt
from receipt_verifier.codec import DEFAULT_LIMITS, anchor_to_dict, load_json, parse_anchor
from receipt_verifier.errors import Error
from receipt_verifier.fastpath import PathMemo
from receipt_verifier.merkle import path_sides, sibling_kinds
from receipt_verifier.model import LedgerEntry, LocalAnchor, canonical_json
from receipt_verifier.proof_id import binding_holds, check_binding
from receipt_verifier.textpath import TextPath, local_anchor
from receipt_verifier.verify import recompute_root
from tests.conftest import leaf0_of_3_limits, load_vector, service_receipts


def _text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))  # as the service writes it


def _general(text: str | bytes) -> tuple[Any, bytes, Any] | None:
    try:
        r = parse_receipt(load_json(text))
        root, anchors = recompute_root(r)
    except Error:
        return None
    return r, root, anchors


def _agree(text: str | bytes, path: TextPath | None = None) -> bool:
    """Whether the text path took it; when it did, it must give exactly what the general path gives,
    and the bytes its local entries will be checked against are their canonical JSON."""
    fast = (path or TextPath(DEFAULT_LIMITS, PathMemo())).parse_and_walk(text)
    if fast is not None:
        assert _general(text) == fast, "the text path accepted or computed something the general path does not"
        for a in fast[2]:
            if isinstance(a, LocalAnchor):
                assert a.entry.canonical_bytes() == canonical_json(a.entry.to_dict())
    return fast is not None


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 64])
def test_service_receipts_take_the_text_path_with_identical_results(tmp_path: Any, n: int) -> None:
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    for doc in service_receipts(tmp_path, n, max(1, n // 2)):
        text = _text(doc)
        assert _agree(text, path)
        assert _agree(text.encode(), path)  # bytes too, as files are read


def test_the_verifier_reports_the_same_through_text_and_general_paths(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 9, 4)
    key = LocalLedger(tmp_path).public_key
    v = Verifier([key])
    for doc in docs:
        assert v.verify(_text(doc)) == Verifier([key]).verify(parse_receipt(doc))
    assert v._paths.hits > 0


def test_every_receipt_of_a_tree_shares_one_parse_of_its_anchors(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 8, 8)
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    results = [path.parse_and_walk(_text(d)) for d in docs]
    assert all(r is not None for r in results)
    assert len({id(r[2][0]) for r in results if r is not None}) == 1
    assert len(path._anchors) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t + "\n",  # JSON whitespace around the document: still taken
        lambda t: " \r\n\t" + t,
    ],
)
def test_whitespace_around_the_document_is_taken(tmp_path: Any, change: Any) -> None:
    assert _agree(change(_text(service_receipts(tmp_path, 3)[1])))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: json.dumps(d),  # other separators
        lambda d: json.dumps(dict(reversed(list(d.items()))), separators=(",", ":")),  # another key order
        lambda d: _text(d).replace('"hash":"' + d["hash"][:1], '"hash":"\\u00' + hex(ord(d["hash"][0]))[2:], 1),
        lambda d: _text(d).replace('"tree_index":0', '"tree_index":0.0'),
        lambda d: _text(d).replace('"tree_index":0', '"tree_index":00'),
        lambda d: _text(d).replace('"state":"anchored",', '"state":"anchored","state":"anchored",'),
        lambda d: _text(d).replace('"anchors":[{', '"anchors":[{"type":"local",'),  # a repeated key in an anchor
        lambda d: _text(d).replace("}]}]}]}", "}]}]},{}]}"),  # a second branch
        lambda d: _text(d)[:-1],
        lambda d: _text(d).replace(d["proof_id"], d["proof_id"][:7] + "-" + d["proof_id"][7] + d["proof_id"][9:]),
    ],
)
def test_other_layouts_go_to_the_general_path(tmp_path: Any, change: Any) -> None:
    doc = service_receipts(tmp_path, 3)[1]
    text = change(doc)
    assert not _agree(text)
    general = _general(text)
    if general is not None:  # valid in another layout: the general path still takes it
        assert general == _general(_text(doc))


def test_a_repeated_key_inside_the_anchors_is_refused_as_the_general_path_refuses_it(tmp_path: Any) -> None:
    text = _text(service_receipts(tmp_path, 3)[1]).replace('"anchors":[{', '"anchors":[{"type":"local",')
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    assert path.parse_and_walk(text) is None and not path._anchors  # not taken, nothing kept
    with pytest.raises(MalformedReceiptError, match="duplicate key 'type'"):
        Verifier().verify(text)


def test_unknown_anchor_types_are_taken_but_never_shared() -> None:
    text = _text(load_vector("valid/unknown-anchor-type.json"))
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    for _ in range(2):
        _agree(text, path)
    assert not path._anchors


_CHARS = st.sampled_from([*'0123456789abcdefABCDEF"{}[],:\\ lr-.TZx\u00e9\u0660', "\\u0030", '""', "}]", "0.0"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_texts_never_take_the_text_path_wrongly(tmp_path_factory: Any, data: st.DataObject) -> None:
    base = [_text(d) for d in service_receipts(tmp_path_factory.mktemp("tp"), 6, 3)]
    base.append(_text(load_vector("valid/local-and-fabric.json")))
    text = data.draw(st.sampled_from(base))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        if action == "replace":
            text = text[:at] + data.draw(_CHARS) + text[at + 1 :]
        elif action == "insert":
            text = text[:at] + data.draw(_CHARS) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 70)) :]
        else:  # move a piece elsewhere, as a reordering would
            n = data.draw(st.integers(1, 120))
            piece, rest = text[at : at + n], text[:at] + text[at + n :]
            to = data.draw(st.integers(0, len(rest)))
            text = rest[:to] + piece + rest[to:]
    _agree(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changed_values_in_the_service_layout_agree(tmp_path_factory: Any, data: st.DataObject) -> None:
    """Valid JSON in the service's layout with values changed: what the text path takes, it takes rightly."""
    docs = service_receipts(tmp_path_factory.mktemp("tv"), 5, 5)
    doc = json.loads(_text(data.draw(st.sampled_from(docs))))
    ops = doc["branches"][0]["ops"]
    field = data.draw(st.sampled_from(["hash", "proof_id", "hash_received", "tree", "salt", "sibling", "side"]))
    hexes = st.text("0123456789abcdef", min_size=0, max_size=66)
    if field in ("hash", "proof_id", "hash_received"):
        doc[field] = data.draw(st.one_of(hexes, st.just(doc[field].upper()), st.just(doc[field][::-1])))
    elif field == "tree":
        key = data.draw(st.sampled_from(["window_id", "tree_index", "leaf_index", "tree_size"]))
        doc["tree"][key] = data.draw(st.one_of(st.integers(-1, 2**33), st.text(max_size=70)))
    elif field == "salt":
        ops[0]["l"] = data.draw(hexes)
    else:
        i = 4 + 3 * data.draw(st.integers(0, (len(ops) - 5) // 3 - 1)) if len(ops) > 5 else 4
        if field == "sibling" and len(ops) > 5:
            (side,) = ops[i]
            ops[i][side] = data.draw(hexes)
        elif len(ops) > 5:
            ((side, value),) = ops[i].items()
            ops[i] = {{"l": "r", "r": "l"}[side]: value}
    _agree(_text(doc))


def test_a_changed_sibling_changes_the_root_with_the_memo_primed(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 32, 32)
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    for doc in docs:
        assert _agree(_text(doc), path)
    truth = _general(_text(docs[9]))
    assert truth is not None
    for level in range(5):
        bad = json.loads(_text(docs[9]))
        sib = bad["branches"][0]["ops"][4 + 3 * level]
        (side,) = sib
        sib[side] = ("0" if sib[side][0] != "0" else "1") + sib[side][1:]
        fast = path.parse_and_walk(_text(bad))
        assert fast is not None and fast[1] != truth[1], level
        assert _agree(_text(bad), path), level


def test_the_text_path_keeps_to_the_limits_at_their_edges() -> None:
    text = _text(load_vector("valid/leaf0-of-3.json"))
    edges = [(Limits(max_bytes=len(text)), True), (Limits(max_bytes=len(text) - 1), False)]
    for limits, taken in [*leaf0_of_3_limits(), *edges]:
        assert (TextPath(limits, None).parse_and_walk(text) is not None) is taken, limits


@pytest.mark.parametrize(
    ("old", "new", "taken"),
    [
        ('"tree_index":0', '"tree_index":2147483647', True),
        ('"tree_index":0', '"tree_index":2147483648', False),
        ('"tree_size":3', '"tree_size":4294967297', False),
        ('"leaf_index":0', '"leaf_index":3', False),  # a leaf index equal to the tree size
    ],
)
def test_numbers_at_and_past_their_bounds(old: str, new: str, taken: bool) -> None:
    """Only the receipt's own tree fields change (the ledger entry's stay): at a bound the text path
    takes what the codec takes; past it, the codec names the problem."""
    text = _text(load_vector("valid/leaf0-of-3.json")).replace(old, new, 1)
    assert _agree(text) is taken
    if not taken:
        with pytest.raises(MalformedReceiptError):
            parse_receipt(load_json(text))


def test_a_tree_of_the_largest_size_is_taken() -> None:
    """2**32 leaves: leaf 0's path has 32 right siblings; both paths take it and compute one root."""
    doc = load_vector("valid/leaf0-of-3.json")
    ops = doc["branches"][0]["ops"]
    doc["tree"]["tree_size"] = 2**32
    level = [{"r": "ab" * 32}, {"l": "01"}, {"op": "sha-256"}]
    doc["branches"][0]["ops"] = ops[:4] + level * 32 + ops[-1:]
    assert _agree(_text(doc))


def test_the_text_path_keeps_no_copy_in_the_codecs_anchor_cache(tmp_path: Any) -> None:
    from receipt_verifier import codec

    texts = [_text(doc) for doc in service_receipts(tmp_path, 3)]
    codec._LOCAL_CACHE.clear()
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    assert all(path.parse_and_walk(t) is not None for t in texts)
    assert not codec._LOCAL_CACHE and path._anchors  # the text path keeps its own, by text


def test_path_sides_equal_sibling_kinds() -> None:
    for size in range(1, 300):
        for index in range(size):
            assert path_sides(index, size) == "".join(sibling_kinds(index, size)), (index, size)
    rng = random.Random(7)
    for _ in range(3000):
        size = rng.randrange(1, 1 << 32)
        index = rng.choice([rng.randrange(size), size - 1, max(0, size - 64), (size - 1) & ~63])
        assert path_sides(index, size) == "".join(sibling_kinds(index, size)), (index, size)


@settings(max_examples=300, deadline=None)
@given(pid=st.uuids(), h=st.text("0123456789abcdef", min_size=64, max_size=64), received=st.text(max_size=30))
def test_binding_holds_exactly_when_check_binding_passes(pid: Any, h: str, received: str) -> None:
    try:
        check_binding(str(pid), h, received)
        passed = True
    except Error:
        passed = False
    assert binding_holds(str(pid), h, received) is passed


def test_binding_holds_for_service_receipts_and_not_for_another_hash(tmp_path: Any) -> None:
    for doc in service_receipts(tmp_path, 4):
        assert binding_holds(doc["proof_id"], doc["hash"], doc["hash_received"])
        other = ("0" if doc["hash"][0] != "0" else "1") + doc["hash"][1:]
        assert not binding_holds(doc["proof_id"], other, doc["hash_received"])
        assert not binding_holds(doc["proof_id"], doc["hash"], doc["hash_received"][:-2] + "9Z")


def test_bytes_that_are_not_ascii_go_to_the_general_path(tmp_path: Any) -> None:
    text = _text(service_receipts(tmp_path, 3)[1]).encode()
    assert not _agree(text.replace(b'"window_tree"', '"window_tr\u00e9e"'.encode()))


@pytest.mark.parametrize("bad", ["A", '"', "\\", " ", "\u00e9", "g"])
@pytest.mark.parametrize("where", ["hash", "salt", "lowest", "highest"])
def test_a_hash_that_is_not_lowercase_hex_is_never_taken_even_with_the_memo_primed(
    tmp_path: Any, bad: str, where: str
) -> None:
    docs = service_receipts(tmp_path, 32, 32)
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    for doc in docs:
        assert path.parse_and_walk(_text(doc)) is not None
    doc = json.loads(_text(docs[6]))
    ops = doc["branches"][0]["ops"]
    if where in ("hash", "salt"):
        target, key = (doc, "hash") if where == "hash" else (ops[0], "l")
    else:
        target = ops[4] if where == "lowest" else ops[-4]
        (key,) = target
    target[key] = target[key][:40] + bad + target[key][41:]
    text = _text(doc).replace("\\\\", "\\")  # the raw character in the text, as an attacker would write it
    assert path.parse_and_walk(text) is None
    assert _general(text) is None


def test_the_memo_never_holds_a_receipts_anchors(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 16, 16)
    memo = PathMemo()
    path = TextPath(DEFAULT_LIMITS, memo)
    for doc in docs:
        assert path.parse_and_walk(_text(doc)) is not None
    assert memo.nodes
    assert all(op.kind != "anchors" for _, _, _, ops in memo.nodes.values() for op in ops)


def test_the_anchors_cache_is_bounded_by_the_text_it_holds(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from receipt_verifier import textpath

    docs = service_receipts(tmp_path, 6, 1)  # six trees: six anchors lists
    listed = len(json.dumps(docs[0]["branches"][0]["ops"][-1]["anchors"], separators=(",", ":")))
    monkeypatch.setattr(textpath, "_ANCHORS_CHARS", 2 * listed)  # room for exactly two lists
    path = TextPath(DEFAULT_LIMITS, PathMemo())
    for i, doc in enumerate(docs):
        assert _agree(_text(doc), path)
        assert len(path._anchors) == 1 + i % 2
        assert path._anchors_chars <= textpath._ANCHORS_CHARS


def test_a_shared_local_anchor_result_is_read_only(tmp_path: Any) -> None:
    docs = service_receipts(tmp_path, 4, 4)
    v = Verifier([LocalLedger(tmp_path).public_key])
    first, second = (v.verify(_text(d)).anchors[0] for d in docs[:2])
    assert first is second  # one tree, one ledger entry: one result
    with pytest.raises(TypeError):
        first.details["seq"] = 999  # type: ignore[index]
    assert first.to_dict()["details"]["seq"] == 0


def test_leaf_1_of_a_one_leaf_tree_is_left_to_the_codec() -> None:
    """Leaf 1 of 1 would need no siblings, like leaf 0 of 1: only the index bound refuses it."""
    text = _text(load_vector("valid/single-leaf.json"))
    assert _agree(text)
    bad = text.replace('"leaf_index":0', '"leaf_index":1', 1)
    assert not _agree(bad)
    with pytest.raises(MalformedReceiptError, match="1 is outside a tree of 1 leaves"):
        parse_receipt(load_json(bad))


def test_another_trees_signed_anchors_are_refused_with_every_cache_warm(tmp_path: Any) -> None:
    """The operator's key signed both trees' entries; a receipt of tree 0 carrying tree 1's anchors (already
    checked and cached for tree 1's receipts) is refused: the root and the tree fields are checked per receipt."""
    from receipt_verifier import AnchorPolicy, AnchorPolicyError

    docs = service_receipts(tmp_path, 8, 4)  # two trees of four leaves, two signed ledger entries
    v = Verifier([LocalLedger(tmp_path).public_key])
    for doc in docs:
        assert v.verify_policy(_text(doc), AnchorPolicy()).anchors[0].status.value == "verified"
    forged = json.loads(_text(docs[1]))
    forged["branches"][0]["ops"][-1] = docs[5]["branches"][0]["ops"][-1]  # tree 1's anchors on a tree-0 receipt
    assert v._text.parse_and_walk(_text(forged)) is not None  # the text path reads it (a well-formed receipt)
    with pytest.raises(AnchorPolicyError, match="holds root"):
        v.verify_policy(_text(forged), AnchorPolicy())


_HEX = "0123456789abcdef"
_TIMES = st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z", fullmatch=True)
_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)


def _listed(anchor: LocalAnchor) -> str:
    return json.dumps([anchor_to_dict(anchor)], separators=(",", ":"))  # as the service writes it


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 2**53 - 1),
    hashes=st.lists(st.text(_HEX, min_size=64, max_size=64), min_size=2, max_size=2),
    window_id=_IDS,
    anchor_id=_IDS,
    tree_index=st.integers(0, 2**31 - 1),
    tree_size=st.integers(1, 2**32),
    times=st.lists(_TIMES, min_size=3, max_size=3),
    key_id=st.text(_HEX, min_size=16, max_size=16),
    signature=st.text(_HEX, min_size=128, max_size=128),
)
def test_a_local_anchor_read_by_its_pattern_is_the_codecs_with_its_canonical_bytes(
    seq: int,
    hashes: list[str],
    window_id: str,
    anchor_id: str,
    tree_index: int,
    tree_size: int,
    times: list[str],
    key_id: str,
    signature: str,
) -> None:
    """Any v1 entry with values of their classes: the pattern gives the codec's anchor, and the canonical
    bytes it made from the text (what the signature is checked against) are the entry's canonical JSON."""
    entry = LedgerEntry(seq, hashes[0], window_id, tree_index, tree_size, hashes[1], *times)
    text = _listed(LocalAnchor(anchor_id, key_id, entry, signature))
    fast = local_anchor(text)
    assert fast is not None and fast == parse_anchor(json.loads(text)[0], remember=False)
    assert fast.entry.canonical_bytes() == canonical_json(fast.entry.to_dict()) == entry.canonical_bytes()


def _signed_listed(tmp_path: Any) -> str:
    doc = service_receipts(tmp_path, 1)[0]
    return json.dumps(doc["branches"][0]["ops"][-1]["anchors"], separators=(",", ":"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"seq":0', '"seq":9007199254740992'),  # 2**53: past the codec's bound
        ('"tree_index":0', '"tree_index":2147483648'),
        ('"tree_size":1', '"tree_size":0'),
        ('"tree_size":1', '"tree_size":4294967297'),
        ('"seq":0', '"seq":00'),
        ('"seq":0', '"seq":0.0'),
        ('"v":1', '"v":2'),
        ('"prev":"0', '"prev":"A'),
        ('"window_id":"', '"window_id":"\\u0041'),  # an escape: the same value, other text
        ('"time":"2', '"time":"\u0662'),  # a digit outside ASCII
        ('"type":"local","anchor_id"', '"anchor_id"'),  # a key left out
        ('"signature":', '"signature" :'),
        ("]", ',{"type":"local"}]'),
    ],
)
def test_other_local_anchor_texts_are_left_to_the_decoder(tmp_path: Any, old: str, new: str) -> None:
    text = _signed_listed(tmp_path)
    assert local_anchor(text) is not None
    changed = text.replace(old, new, 1)
    assert changed != text
    assert local_anchor(changed) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_changed_local_anchor_text_is_read_rightly_or_not_at_all(tmp_path_factory: Any, data: st.DataObject) -> None:
    text = _signed_listed(tmp_path_factory.mktemp("la"))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + data.draw(_CHARS) + text[at + data.draw(st.integers(0, 2)) :]
    fast = local_anchor(text)
    if fast is not None:
        assert fast == parse_anchor(json.loads(text)[0], remember=False)
        assert fast.entry.canonical_bytes() == canonical_json(fast.entry.to_dict())


def test_entry_values_moved_between_fields_fail_the_signature_on_the_text_path(tmp_path: Any) -> None:
    """An attacker with no key swaps the window's start and end in a signed entry: still well-formed, the
    root and tree still match, so only the signature over the entry's canonical bytes can refuse it."""
    docs = service_receipts(tmp_path, 2)
    entry = docs[0]["branches"][0]["ops"][-1]["anchors"][0]["entry"]
    entry["window_start"], entry["window_end"] = entry["window_end"], entry["window_start"]
    assert entry["window_start"] != entry["window_end"]
    text = _text(docs[0])
    v = Verifier([LocalLedger(tmp_path).public_key])
    assert v._text.parse_and_walk(text) is not None
    result = v.verify(text).anchors[0]
    assert result.status.value == "failed" and "signature invalid" in result.reason


def test_a_trees_first_receipt_leaves_the_memo_alone_and_the_second_fills_it(tmp_path: Any) -> None:
    """Receipts each of its own tree (a window each) share nothing: their paths are never kept."""
    docs = service_receipts(tmp_path, 8, 4)  # two trees
    memo = PathMemo()
    path = TextPath(DEFAULT_LIMITS, memo)
    assert _agree(_text(docs[0]), path) and not memo.nodes
    assert _agree(_text(docs[4]), path) and not memo.nodes  # the other tree's first
    assert _agree(_text(docs[1]), path) and memo.nodes and memo.hits == 0
    assert _agree(_text(docs[0]), path) and memo.hits == 1  # leaf 0 meets leaf 1 one level up


def _with_anchors(anchors: list[dict[str, Any]]) -> str:
    doc = load_vector("valid/local-and-fabric.json")
    doc["branches"][0]["ops"][-1]["anchors"] = anchors
    return _text(doc)


def test_other_anchor_lists_are_decoded_taken_and_kept_once(tmp_path: Any) -> None:
    """Lists other than one local anchor (a local and a Fabric one; a Fabric one alone) go through the
    decoder: taken, kept by their text (one parse for a tree's receipts), and never in the codec's cache."""
    from receipt_verifier import codec

    both = load_vector("valid/local-and-fabric.json")["branches"][0]["ops"][-1]["anchors"]
    for anchors in (both, both[1:]):
        text = _with_anchors(anchors)
        path = TextPath(DEFAULT_LIMITS, PathMemo())
        codec._LOCAL_CACHE.clear()
        first = path.parse_and_walk(text)
        assert first is not None and not codec._LOCAL_CACHE
        assert [a.type for a in first[2]] == [a["type"] for a in anchors]
        assert path._anchors == {json.dumps(anchors, separators=(",", ":")): first[2]}
        again = path.parse_and_walk(text)
        assert again is not None and again[2] is first[2]
        assert _agree(text)
    text = _with_anchors(both)
    assert TextPath(Limits(max_anchors=2), None).parse_and_walk(text) is not None
    assert TextPath(Limits(max_anchors=1), None).parse_and_walk(text) is None  # two anchors past the limit
    assert not _agree(_with_anchors([both[1], both[1]]))  # a repeated anchor: the general path names it


def test_a_service_receipts_anchor_is_read_by_its_pattern_at_the_smallest_limit(tmp_path: Any) -> None:
    """One anchor allowed is enough for the pattern: the entry comes with its canonical bytes made from the text."""
    text = _text(service_receipts(tmp_path, 1)[0])
    fast = TextPath(Limits(max_anchors=1), None).parse_and_walk(text)
    assert fast is not None
    (anchor,) = fast[2]
    assert isinstance(anchor, LocalAnchor)
    assert anchor.entry.__dict__.get("_canonical") == canonical_json(anchor.entry.to_dict())
