"""SmartBFT evidence offline, over blocks captured from four orderers of four organisations
(``proof_spec/vectors/fabric-bft``, from ``capture_fabric_vectors.py --consensus bft``): the trust file
shows the consenters and the quorum, the captured anchors verify, the BFT corpus and the shared corpus
fail with their exact reasons, and an anchor made under a newer config verifies only through a config
block that a quorum of the pinned consenters signed."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from fabric_protos.common import common_pb2, configtx_pb2, configuration_pb2
from fabric_protos.msp import identities_pb2

from receipt_verifier import Verifier
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.ledger import load_public_key_file
from receipt_verifier.verify import AnchorResult, AnchorStatus
from tests.conftest import VECTORS
from tests.fabric_forge import Forger, Signer
from tests.fabric_tampering import BFT_CASES, CASES, HARMLESS, Facts, bft_expected, expected, fabric_anchor

BFT = VECTORS / "fabric-bft"
BUNDLE: dict[str, Any] = json.loads((BFT / "bundle.json").read_text())
NEWER: dict[str, Any] = json.loads((BFT / "bundle-newer-config.json").read_text())
TRUST: dict[str, Any] = json.loads((BFT / "trust.json").read_text())
KEYS: dict[str, Any] = json.loads((BFT / "forge-keys.json").read_text())
ORGS = ["HospitalsOrderingMSP", "InsurersOrderingMSP", "RegulatorMSP", "PatientsTrustMSP"]


def _on(bundle: dict[str, Any], channel: str = "insurance") -> AnchorResult:
    """The verdict on ``bundle``'s anchor on ``channel``; every other anchor must still verify."""
    verifier = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
    result = verifier.verify(json.dumps(bundle))
    mine = next(a for a in result.anchors if a.anchor_id.startswith(channel + ":"))
    others = [a for a in result.anchors if a is not mine]
    assert all(a.status is AnchorStatus.VERIFIED for a in others), others
    return mine


def _tampered(case: Any) -> tuple[dict[str, Any], Facts]:
    bundle = copy.deepcopy(BUNDLE)
    anchor, item = fabric_anchor(bundle, "insurance")
    forger = Forger.of_keys(KEYS)
    facts = Facts.of(common_pb2.Block.FromString(base64.b64decode(item["block"])), anchor, forger)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(case(block, forger, anchor)).decode()
    return bundle, facts


def test_the_trust_file_shows_the_consenters_and_the_quorum() -> None:
    for channel in TRUST["channels"].values():
        assert channel["consensus"] == "BFT" and (channel["quorum"], channel["tolerates"]) == (3, 1)
        assert [c["id"] for c in channel["consenters"]] == [1, 2, 3, 4]
        assert [c["msp_id"] for c in channel["consenters"]] == ORGS  # no organisation holds two consenters
        assert channel["block_validation_policy"].startswith("OutOf(3, 'HospitalsOrderingMSP:")


def test_the_captured_anchors_verify_under_a_quorum_of_consenters() -> None:
    assert KEYS["consensus"] == "bft"
    for channel in ("personal-health", "medical-history", "insurance"):
        got = _on(BUNDLE, channel)
        assert got.status is AnchorStatus.VERIFIED, got.reason
        signers = got.reason.split("signed by ", 1)[1].split(";", 1)[0].split(", ")
        assert len({s.split(":")[0] for s in signers}) >= 3 and {s.split(":")[0] for s in signers} <= set(ORGS)


@pytest.mark.parametrize("name", list(BFT_CASES))
def test_each_quorum_case_gives_its_exact_verdict(name: str) -> None:
    case, template = BFT_CASES[name]
    bundle, facts = _tampered(case)
    got = _on(bundle)
    want = bft_expected(template, facts)
    assert got.status is (AnchorStatus.VERIFIED if want.startswith("block ") else AnchorStatus.FAILED)
    assert got.reason == want


@pytest.mark.parametrize("name", list(CASES))
def test_the_shared_corpus_over_bft_blocks(name: str) -> None:
    case, template = CASES[name]
    bundle, facts = _tampered(case)
    got = _on(bundle)
    assert got.status is AnchorStatus.FAILED
    assert got.reason == expected(template, facts, "insurance")


@pytest.mark.parametrize("name", list(HARMLESS))
def test_harmless_changes_still_verify_on_bft(name: str) -> None:
    case, template = HARMLESS[name]
    bundle, facts = _tampered(case)
    got = _on(bundle)
    assert got.status is AnchorStatus.VERIFIED, got.reason
    assert got.reason == expected(template, facts, "insurance")


def _config_item(bundle: dict[str, Any], channel: str) -> dict[str, Any]:
    _, item = fabric_anchor(bundle, channel)
    return next(b for b in bundle["fabric_blocks"] if b["channel"] == channel and b is not item)


def test_a_consenter_set_changed_by_an_unverified_config_block_is_refused() -> None:
    """The newer config verifies when the pinned consenters signed it; a config block that names other
    consenters and is signed by them (not a quorum of the pinned ones) is refused, and so is the anchor."""
    channel = "personal-health"
    got = _on(NEWER, channel)
    number = _config_item(NEWER, channel)["number"]
    assert (
        got.status is AnchorStatus.VERIFIED and f"under config block {number}, verified under the pinned" in got.reason
    )
    forged = copy.deepcopy(NEWER)
    item = _config_item(forged, channel)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    rogue = Forger.of_keys(KEYS)
    rogue.orderers = [Signer.rogue(m, f"orderer9.{m.lower()}") for m in ORGS]
    env = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(env.payload)
    cfg = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    value = cfg.config.channel_group.groups["Orderer"].values["Orderers"]
    mapping = configuration_pb2.Orderers.FromString(value.value)
    for consenter, signer in zip(mapping.consenter_mapping, rogue.orderers, strict=True):
        consenter.identity = identities_pb2.SerializedIdentity.FromString(signer.serialized).id_bytes
    value.value = mapping.SerializeToString()
    payload.data = cfg.SerializeToString()
    env.payload = payload.SerializeToString()
    block.data.data[0] = env.SerializeToString()
    item["block"] = base64.b64encode(rogue.reseal(block)).decode()
    got = _on(forged, channel)
    assert got.status is AnchorStatus.FAILED
    assert got.reason.startswith(
        f"ConfigMismatchError: config block {number} does not verify under the pinned config: block {number}:"
        " orderer signatures do not satisfy OutOf(3, "
    )
    assert "(0 distinct consenter(s) signed, the quorum is 3; orderer: the signature by " in got.reason
