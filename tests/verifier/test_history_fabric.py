"""History bundles whose window is anchored on Fabric: the block checked, the write set matched to the window,
and each anchor that cannot be checked named."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from receipt_verifier import Verifier
from receipt_verifier.errors import HistoryError, WriteSetError
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import key_id, load_public_key_file
from tests.conftest import VECTORS

from .histories import (
    AS_OF,
    DOMAIN,
    KEYS,
    KID,
    LOGS,
    entry,
    heads,
    local_anchor,
    window_change,
)

FABRIC_TRUST = load_trust(json.loads((VECTORS / "fabric" / "trust.json").read_text()))


def _fabric(channel: str, block: int = 4) -> dict[str, Any]:
    return {
        "type": "fabric",
        "anchor_id": f"{channel}:94d0ef0afe48cd7a",
        "channel": channel,
        "tx_id": "94d0ef0afe48cd7a8ab5f3120fcadc64c374630528c78fb1aa30b82ef6a7c186",
        "block_number": block,
        "key": "w1763712120000/0",
        "chaincode": "anchor",
    }


def test_anchors_that_cannot_be_checked_are_named_when_none_verifies() -> None:
    tree = heads(LOGS)
    unknown_key = local_anchor(entry(tree))
    unknown_key["key_id"] = "00" * 8
    anchors = [unknown_key, _fabric(DOMAIN), _fabric("elsewhere"), {"type": "ots", "anchor_id": "ots:1"}]
    doc = window_change(anchors=anchors)
    with pytest.raises(HistoryError) as err:
        verify_history(doc, KEYS, as_of=AS_OF)
    assert str(err.value) == (
        "no anchor of the window verifies with what is pinned: "
        f"local {KID}:0: no pinned ledger key 0000000000000000 (pass --ledger-key); "
        f"fabric {DOMAIN}: no trust file pins it (pass --trust); "
        "fabric elsewhere: no trust file pins it (pass --trust); "
        "ots ots:1: an anchor type this verifier does not know"
    )
    with pytest.raises(HistoryError) as err:
        verify_history(doc, KEYS, as_of=AS_OF, fabric_trust=FABRIC_TRUST)
    assert f"fabric {DOMAIN}: no block; fabric elsewhere: no trust file pins it (pass --trust)" in str(err.value)


def test_an_anchor_that_cannot_be_checked_does_not_stop_the_next() -> None:
    tree = heads(LOGS)
    unknown_key = local_anchor(entry(tree, seq=1))
    unknown_key["key_id"] = "00" * 8
    for first in (unknown_key, _fabric(DOMAIN)):
        report, _ = verify_history(
            window_change(anchors=[first, local_anchor(entry(tree))]), KEYS, as_of=AS_OF, fabric_trust=FABRIC_TRUST
        )
        assert report.anchor == f"local ledger {KID} entry 0"


CAPTURED = json.loads((VECTORS / "fabric" / "bundle.json").read_text())


def _captured_window() -> dict[str, Any]:
    """A history of the captured Fabric tree (a v1 tree of one leaf, anchored without heads)."""
    [anchors] = [op["anchors"] for op in CAPTURED["receipt"]["branches"][0]["ops"] if "anchors" in op]
    fabric = copy.deepcopy(next(a for a in anchors if a["channel"] == DOMAIN))
    tree = CAPTURED["receipt"]["tree"]
    root = (
        Verifier([load_public_key_file(VECTORS / "fabric" / "ledger-key.pub.json")]).verify(json.dumps(CAPTURED)).root
    )
    doc = window_change(window_id=tree["window_id"], tree_size=tree["tree_size"], root=root, anchors=[fabric])
    doc["fabric_blocks"] = CAPTURED["fabric_blocks"]
    return doc


def test_a_fabric_block_given_is_checked_not_skipped() -> None:
    doc = _captured_window()
    doc["window"]["anchors"][0]["key"] = "w1763712120000/0"
    with pytest.raises(WriteSetError) as err:
        verify_history(doc, KEYS, as_of=AS_OF, fabric_trust=FABRIC_TRUST)
    key = f"{CAPTURED['receipt']['tree']['window_id']}/0"
    assert str(err.value) == f"the transaction wrote key {key}, the anchor names w1763712120000/0"


def test_a_fabric_anchor_of_the_tree_without_the_heads_is_a_hard_failure() -> None:
    doc = _captured_window()
    with pytest.raises(HistoryError) as err:
        verify_history(doc, KEYS, as_of=AS_OF, fabric_trust=FABRIC_TRUST)
    assert str(err.value) == (
        f"fabric anchor {doc['window']['anchors'][0]['anchor_id']} wrote other heads or another window end"
        " than the bundle's"
    )
    doc["window"]["tree_size"] += 1  # the block is checked against the window's tree
    with pytest.raises(WriteSetError, match="tree size"):
        verify_history(doc, KEYS, as_of=AS_OF, fabric_trust=FABRIC_TRUST)


HISTORY_KEY = load_public_key_file(VECTORS / "fabric" / "history-ledger-key.pub.json")


FABRIC_HISTORY: dict[str, Any] = json.loads((VECTORS / "fabric" / "history.json").read_text())


def _fabric_history() -> tuple[dict[str, Any], int]:
    doc = copy.deepcopy(FABRIC_HISTORY)
    [block] = [a["block_number"] for a in doc["window"]["anchors"] if a["type"] == "fabric"]
    return doc, block


def test_a_captured_history_verifies_on_fabric_alone_and_with_its_ledger() -> None:
    doc, block = _fabric_history()
    report, recs = verify_history(doc, {}, fabric_trust=FABRIC_TRUST)
    assert (report.complete, report.size, len(recs)) == (True, 3, 3)
    assert report.anchor == f"Fabric {DOMAIN} block {block}"
    report, _ = verify_history(doc, {key_id(HISTORY_KEY): HISTORY_KEY}, fabric_trust=FABRIC_TRUST)
    local = next(a for a in doc["window"]["anchors"] if a["type"] == "local")
    assert (
        report.anchor == f"Fabric {DOMAIN} block {block}, local ledger {local['key_id']} entry {local['entry']['seq']}"
    )


@pytest.mark.parametrize("field", ["heads_root", "heads_size", "window_end"])
def test_a_window_whose_heads_or_end_differ_from_the_fabric_write_is_refused(field: str) -> None:
    doc, _ = _fabric_history()
    w = doc["window"]
    w[field] = {"heads_root": "00" * 32, "heads_size": w["heads_size"] + 1, "window_end": "2020-01-01T00:00:00Z"}[field]
    fabric = next(a for a in w["anchors"] if a["type"] == "fabric")
    with pytest.raises(HistoryError) as err:
        verify_history(doc, {}, fabric_trust=FABRIC_TRUST)
    assert str(err.value) == (
        f"fabric anchor {fabric['anchor_id']} wrote other heads or another window end than the bundle's"
    )


def test_a_window_root_other_than_the_fabric_write_is_refused() -> None:
    doc, _ = _fabric_history()
    written = doc["window"]["root"]
    doc["window"]["root"] = "ab" * 32
    with pytest.raises(WriteSetError) as err:
        verify_history(doc, {}, fabric_trust=FABRIC_TRUST)
    assert str(err.value) == f"the transaction wrote root {written}, the branch computes {'ab' * 32}"


def test_without_the_block_the_fabric_anchor_is_named_missing() -> None:
    doc, block = _fabric_history()
    doc["fabric_blocks"] = [b for b in doc["fabric_blocks"] if b["number"] != block]
    with pytest.raises(HistoryError) as err:
        verify_history(doc, {}, fabric_trust=FABRIC_TRUST)
    local = next(a for a in doc["window"]["anchors"] if a["type"] == "local")
    assert str(err.value) == (
        f"no anchor of the window verifies with what is pinned: fabric {DOMAIN}: no block;"
        f" local {local['anchor_id']}: no pinned ledger key {local['key_id']} (pass --ledger-key)"
    )


def test_a_fabric_anchor_of_another_domains_channel_says_so() -> None:
    doc, block = _fabric_history()
    doc["domain"] = "insurance"  # the records are bound to medical-history: they are refused, the anchor still holds
    report, _ = verify_history(doc, {}, fabric_trust=FABRIC_TRUST)
    assert report.anchor == f"Fabric {DOMAIN} block {block} (not the channel of insurance)"
    assert report.problems and "is not a record of" in report.problems[1]
