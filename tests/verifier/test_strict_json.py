"""Repeated JSON keys are refused; the cheap receipt check agrees with the strict parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_verifier import strict_json
from tests.conftest import VECTORS

RECEIPT = (VECTORS / "valid/leaf0-of-3.json").read_text()


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '{"a" : 1, "a": 2}',
        '{"x": {"b": 1, "b": 1}}',
        RECEIPT.replace('"state":', '"state": "pending", "state":', 1),
        RECEIPT.replace('"leaf_index":', '"leaf_index" :0, "leaf_index":', 1),
        RECEIPT.replace('"signature":', '"signature": "00",\n "signature" \n:', 1),
    ],
)
def test_a_repeated_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json.loads(text)
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json.loads_receipt(text)
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json.loads_receipt(text.encode())


def test_a_quote_and_colon_inside_a_string_is_not_a_key() -> None:
    text = RECEIPT.replace('"type": "HealthReceipt"', '"type": "Health\\":Receipt"', 1)
    assert strict_json.loads_receipt(text) == json.loads(text)


keys = st.sampled_from(["a", "b", "hash", "ops", "l", "r", "anchors", "entry", "tree", "branches"])
values: Any = st.recursive(
    st.none() | st.integers() | st.text(alphabet='ab":\\ ', max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.lists(st.tuples(keys, inner), max_size=5),
    max_leaves=20,
)


def _render(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(x, tuple) for x in v):
        return "{" + ", ".join(f"{json.dumps(k)}: {_render(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    return json.dumps(v)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(keys, values), max_size=6))
def test_the_cheap_check_agrees_with_the_strict_parser(pairs: list[tuple[str, Any]]) -> None:
    _agrees_with_strict(_render(pairs) if pairs else "{}", strict_json.loads_receipt)


def _agrees_with_strict(text: str, cheap: Any) -> None:
    """``cheap`` refuses what the strict parser refuses and decodes the rest alike."""
    try:
        expected = strict_json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            cheap(text)
        return
    assert cheap(text) == expected


ANCHORS = json.dumps(json.loads(RECEIPT)["branches"][0]["ops"][-1]["anchors"], separators=(",", ":"))


@pytest.mark.parametrize(
    "text",
    [
        ANCHORS.replace('"type":', '"type":"local","type":', 1),
        ANCHORS.replace('"seq":', '"seq":1,"seq":', 1),  # inside the ledger entry
        ANCHORS.replace('"seq":', '"seq" :1,"seq":', 1),  # spaced: counting is not trusted
        "[" + ANCHORS[1:-1] + ',{"a":1,"a":2}]',
    ],
)
def test_a_repeated_key_in_an_anchors_list_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json.loads_anchors(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.tuples(keys, values), max_size=6), max_size=3))
def test_the_anchors_count_agrees_with_the_strict_parser(anchors: list[list[tuple[str, Any]]]) -> None:
    _agrees_with_strict("[" + ",".join(_render(a) if a else "{}" for a in anchors) + "]", strict_json.loads_anchors)


@pytest.mark.parametrize("parse", [strict_json.loads, strict_json.loads_receipt, strict_json.loads_anchors])
def test_nesting_deeper_than_the_parser_recurses_is_malformed_not_a_crash(parse: Any) -> None:
    """A crafted file or block of 100,000 '[' raised RecursionError out of the CLI (found by a review)."""
    with pytest.raises(ValueError, match="nested too deeply"):
        parse("[" * 100_000)


def test_a_deeply_nested_history_bundle_is_a_usage_error(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from receipt_verifier._cli import main

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    key = tmp_path / "key.hex"
    key.write_text("00" * 32)
    assert main(["history", str(deep), "--ledger-key", str(key)]) == 2
    assert "not valid JSON (nested too deeply)" in capsys.readouterr().err


def test_every_document_the_verifier_reads_refuses_a_repeated_key(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spec section 3 holds beyond receipts: a ledger line, an evidence bundle, a trust file and a
    history bundle with a repeated key are refused, each naming the key (a lenient parser keeps one
    of the two values, and two readers may keep different ones)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from receipt_verifier import LedgerError, MalformedReceiptError, Verifier
    from receipt_verifier._cli import main
    from receipt_verifier.errors import TrustFileError
    from receipt_verifier.fabric.trust import load_trust
    from receipt_verifier.ledger import SignedEntry, parse_ledger_line, sign_entry
    from receipt_verifier.model import LedgerEntry

    key = Ed25519PrivateKey.generate()
    entry = LedgerEntry(
        0, "0" * 64, "w", 0, 1, "ab" * 32, "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z", "2025-01-01T00:00:01Z"
    )
    line = SignedEntry(entry, sign_entry(key, entry)).to_json()
    assert parse_ledger_line(line, 7).entry == entry
    with pytest.raises(LedgerError, match="ledger line 7: not JSON \\(duplicate key 'signature'"):
        parse_ledger_line(line.replace('"signature":', '"signature":"00","signature":', 1), 7)

    bundle = (VECTORS / "fabric/bundle.json").read_text()
    twice = bundle.replace('"type": "HealthReceiptEvidence",', '"type": "HealthReceiptEvidence",\n "type": "x",', 1)
    assert twice != bundle
    with pytest.raises(MalformedReceiptError, match="not JSON: duplicate key 'type'"):
        Verifier().verify(twice)

    trust = (VECTORS / "fabric/trust.json").read_text()
    assert load_trust(trust)
    with pytest.raises(TrustFileError, match="not JSON: duplicate key 'version'"):
        load_trust(trust.replace('"version": 1,', '"version": 1,\n "version": 1,', 1))

    history = (VECTORS / "history/complete.json").read_text()
    bad = tmp_path / "history.json"
    bad.write_text(history.replace('"domain":', '"domain": "other",\n  "domain":', 1))
    hex_key = tmp_path / "key.hex"
    hex_key.write_text("00" * 32)
    assert main(["history", str(bad), "--ledger-key", str(hex_key)]) == 2
    assert "not valid JSON (duplicate key 'domain'" in capsys.readouterr().err
