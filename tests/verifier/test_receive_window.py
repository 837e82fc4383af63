"""A chained window holds only hashes received within it (spec section 14.7), checked per receipt."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from receipt_verifier.chain import received_outside
from receipt_verifier.codec import parse_entry
from receipt_verifier.ledger import sign_entry
from receipt_verifier.verify import AnchorStatus, Verifier
from tests.conftest import VECTORS
from tests.verifier.histories import KEY


def _chained(start: str, end: str) -> dict[str, Any]:
    """The v2 vector with its ledger entry made a v3 entry of a chained window, re-signed with the ledger key."""
    doc = json.loads((VECTORS / "valid/v2-domain-only.json").read_text())
    anchor = doc["branches"][0]["ops"][-1]["anchors"][0]
    entry = parse_entry(anchor["entry"], "entry")
    entry = replace(
        entry,
        window_start=start,
        window_end=end,
        domain=doc["domain"],
        heads_root="ab" * 32,
        heads_size=2,
        chain_seq=4,
        proof_hash="cd" * 32,
    )
    anchor["entry"] = entry.to_dict()
    anchor["signature"] = sign_entry(KEY, entry)
    return doc


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        ("2025-11-21T08:00:00.009Z", "2025-11-21T08:00:01Z", None),  # received at its start: inside
        ("2025-11-21T07:59:59Z", "2025-11-21T08:00:00.009Z", None),  # and at its end
        ("2025-11-21T08:00:00.0091Z", "2025-11-21T08:00:01Z", "before its chained window started"),
        ("2025-11-21T07:59:00Z", "2025-11-21T08:00:00.008999Z", "after its chained window ended"),
    ],
)
def test_a_receipt_outside_its_chained_window_fails(start: str, end: str, reason: str | None) -> None:
    doc = _chained(start, end)
    assert doc["hash_received"] == "2025-11-21T08:00:00.0090000Z"
    result = Verifier([KEY.public_key()]).verify(doc)
    (anchor,) = result.anchors
    if reason is None:
        assert anchor.status is AnchorStatus.VERIFIED, anchor.reason
    else:
        assert anchor.status is AnchorStatus.FAILED
        assert anchor.reason.startswith("ledger entry 3: received at 2025-11-21T08:00:00.0090000Z, ")
        assert reason in anchor.reason


def test_an_unchained_entry_keeps_its_older_rule() -> None:
    """v1 and v2 entries carry no such promise (the vector's window starts a minute after the receipt)."""
    assert received_outside("2025-11-21T08:00:00.0090000Z", "2025-11-21T08:01:00Z", "2025-11-21T08:01:01Z")
    doc = json.loads((VECTORS / "valid/v2-domain-only.json").read_text())
    (anchor,) = Verifier([KEY.public_key()]).verify(doc).anchors
    assert anchor.status is AnchorStatus.VERIFIED
