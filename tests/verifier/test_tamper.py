"""Property: any single-byte change to a valid receipt that changes what it says is rejected, by the
check responsible for the changed value; a change that leaves the decoded document equal
(whitespace) verifies as before."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from receipt_verifier import AnchorPolicy, AnchorStatus, Verifier
from receipt_verifier.errors import (
    AnchorPolicyError,
    BranchError,
    Error,
    HashMismatchError,
    MalformedReceiptError,
    ProofIdMismatchError,
)
from receipt_verifier.ledger import load_public_key_file
from tests.conftest import VECTORS, load_vector

KEY = load_public_key_file(VECTORS / "ledger-key.pem")
CASES = ["valid/leaf0-of-3.json", "valid/leaf2-of-3.json", "valid/single-leaf.json"]
# each case as its file is written (indented: the verifier decodes it) and as the service writes receipts
# (compact: the verifier's text path reads it without decoding)
LAYOUTS = ["file", "compact"]


def _original(name: str, layout: str) -> bytes:
    if layout == "file":
        return (VECTORS / name).read_bytes()
    return json.dumps(load_vector(name), separators=(",", ":")).encode()


# which checks may reject a change to each part of a receipt (a malformed value is always refused
# by the codec first)
RESPONSIBLE: dict[str, tuple[type[Error], ...]] = {
    "hash": (HashMismatchError,),
    "proof_id": (ProofIdMismatchError, BranchError),
    "hash_received": (ProofIdMismatchError,),
    "tree": (BranchError, AnchorPolicyError),
    "branches/ops": (BranchError, AnchorPolicyError),
    "branches/anchors": (AnchorPolicyError,),
}


def _first_difference(a: Any, b: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    if type(a) is not type(b):
        return path
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return (*path, "<keys>")
        for k in a:
            found = _first_difference(a[k], b[k], (*path, k))
            if found is not None:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return (*path, "<length>")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, (*path, str(i)))
            if found is not None:
                return found
        return None
    return None if a == b else path


def _part(path: tuple[str, ...]) -> str:
    if path[:1] == ("branches",):
        return "branches/anchors" if "anchors" in path else "branches/ops"
    return path[0] if path else "<document>"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CASES), st.sampled_from(LAYOUTS), st.data())
def test_single_byte_change(name: str, layout: str, data: st.DataObject) -> None:
    original = _original(name, layout)
    vector = load_vector(name)
    event(f"layout {layout}")
    pos = data.draw(st.integers(0, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    tampered = original[:pos] + bytes([new]) + original[pos + 1 :]
    try:
        decoded = json.loads(tampered)
    except ValueError:
        decoded = None
    same = decoded == json.loads(original)
    try:
        result = Verifier([KEY]).verify_policy(tampered, AnchorPolicy.parse("all"), record_hash=vector["hash"])
    except Error as exc:
        assert not same, f"an unchanged document was rejected: {exc}"
        path = _first_difference(json.loads(original), decoded) if decoded is not None else None
        part = "<not json>" if path is None else _part(path)
        event(f"{part}: {type(exc).__name__}")
        if isinstance(exc, MalformedReceiptError):
            return  # the codec refused the value itself
        allowed = RESPONSIBLE.get(part, ())
        assert isinstance(exc, allowed), f"a change to {path} was rejected by {type(exc).__name__}: {exc}"
        return
    assert same, f"a change at byte {pos} ({original[pos : pos + 1]!r} -> {bytes([new])!r}) was accepted"
    assert all(a.status is AnchorStatus.VERIFIED for a in result.anchors)


HEX = b"0123456789abcdef"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CASES), st.sampled_from(LAYOUTS), st.data())
def test_every_hex_digit_of_a_committed_value_matters(name: str, layout: str, data: st.DataObject) -> None:
    """A hex digit swapped for another keeps the receipt well formed: a deeper check must catch it."""
    original = _original(name, layout)
    vector = load_vector(name)
    doc = json.loads(original)
    spots = [i for i, b in enumerate(original) if b in HEX and _in_string(original, i)]
    pos = data.draw(st.sampled_from(spots))
    new = data.draw(st.sampled_from([c for c in HEX if c != original[pos]]))
    tampered = original[:pos] + bytes([new]) + original[pos + 1 :]
    decoded = json.loads(tampered)
    path = _first_difference(doc, decoded)
    assert path is not None
    try:
        Verifier([KEY]).verify_policy(tampered, AnchorPolicy.parse("all"), record_hash=vector["hash"])
    except MalformedReceiptError as exc:
        event(f"{_part(path)}: {type(exc).__name__}")  # e.g. a UUID's version nibble, or a time digit out of range
        return
    except Error as exc:
        event(f"{_part(path)}: {type(exc).__name__}")
        assert isinstance(exc, RESPONSIBLE.get(_part(path), ())), f"{path}: {type(exc).__name__}: {exc}"
        return
    raise AssertionError(f"changing {'/'.join(path)} ({original[pos : pos + 1]!r} -> {bytes([new])!r}) was accepted")


def _in_string(text: bytes, i: int) -> bool:
    """Whether byte i lies inside a JSON string value, not a key (these receipts escape no quote)."""
    if text.count(b'"', 0, i) % 2 == 0:
        return False
    end = text.find(b'"', i)
    return text[end + 1 : end + 2] != b":"
