"""Fabric verification without a network: the captured evidence vector (proof_spec/vectors/fabric,
made by proof_spec/tools/capture_fabric_vectors.py on a real network), DER headers and policies."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from receipt_verifier import AnchorPolicy, Verifier
from receipt_verifier.errors import (
    BlockFormatError,
    ChannelMismatchError,
    MalformedReceiptError,
    OrdererSignatureError,
    TrustFileError,
)
from receipt_verifier.evidence import parse_blocks
from receipt_verifier.fabric import policy as pol
from receipt_verifier.fabric.blocks import header_bytes
from receipt_verifier.fabric.evidence import FabricChecker
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.ledger import load_public_key_file
from receipt_verifier.model import FabricAnchor, TreeInfo
from receipt_verifier.verify import AnchorStatus
from tests.conftest import VECTORS

FABRIC = VECTORS / "fabric"
BUNDLE: dict[str, Any] = json.loads((FABRIC / "bundle.json").read_text())
TRUST: dict[str, Any] = json.loads((FABRIC / "trust.json").read_text())
RECORD = (FABRIC / "record.json").read_bytes()


def _verifier(trust: dict[str, Any] = TRUST) -> Verifier:
    return Verifier([load_public_key_file(FABRIC / "ledger-key.pub.json")], fabric_trust=load_trust(trust))


def test_the_captured_bundle_verifies_offline() -> None:
    result = _verifier().verify(json.dumps(BUNDLE), record=RECORD)
    assert [a.status for a in result.anchors] == [AnchorStatus.VERIFIED] * 4
    channels = sorted(a.details["channel"] for a in result.anchors if a.type == "fabric")
    assert channels == ["insurance", "medical-history", "personal-health"]
    assert all("InsurersMSP" in a.reason for a in result.anchors if a.type == "fabric")


def test_a_flipped_block_byte_and_an_edited_trust_file_are_refused() -> None:
    bundle = copy.deepcopy(BUNDLE)
    item = next(b for b in bundle["fabric_blocks"] if b["number"] > 0)
    raw = bytearray(base64.b64decode(item["block"]))
    raw[len(raw) // 3] ^= 1
    item["block"] = base64.b64encode(bytes(raw)).decode()
    result = _verifier().verify(json.dumps(bundle))
    failed = [a for a in result.anchors if a.status is AnchorStatus.FAILED]
    assert len(failed) == 1 and failed[0].details["channel"] == item["channel"], result.anchors
    trust = copy.deepcopy(TRUST)
    trust["channels"]["insurance"]["endorsement_policy"] = "OR('HospitalsMSP.peer', 'InsurersMSP.peer')"
    with pytest.raises(TrustFileError, match="endorsement_policy"):
        load_trust(trust)


def test_a_bundle_lists_each_block_once_and_holds_nothing_else() -> None:
    """Spec section 11: a block appears once (two copies could differ), and a bundle has no other member."""
    twice = copy.deepcopy(BUNDLE)
    item = twice["fabric_blocks"][1]
    twice["fabric_blocks"].append(dict(item))
    with pytest.raises(
        MalformedReceiptError, match=f"fabric_blocks lists block {item['number']} of {item['channel']} twice"
    ):
        _verifier().verify(json.dumps(twice))
    with pytest.raises(MalformedReceiptError, match="unexpected: note"):
        _verifier().verify(json.dumps({**BUNDLE, "note": "trust me"}))
    assert _verifier().verify(json.dumps(BUNDLE)).anchors  # the bundle itself is fine


def test_trust_show_prints_the_pinned_header_hashes(tmp_path: Any) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "receipt_verifier._cli", "trust", "show", str(FABRIC / "trust.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, ch in TRUST["channels"].items():
        assert name in out and ch["config_block_hash"] in out


def test_der_header_known_answers() -> None:
    zero = header_bytes(0, b"", b"\x00" * 32)
    assert zero == bytes.fromhex("3027020100" + "0400" + "0420" + "00" * 32)
    assert header_bytes(128, b"", b"")[:6] == bytes.fromhex("300802020080")  # 128 needs a 0 sign byte
    assert header_bytes(300, b"\x01" * 200, b"")[:4] == bytes.fromhex("3081d102")  # long-form length


@dataclass(frozen=True)
class Signer:
    msp_id: str
    roles: frozenset[str]
    serialized: bytes = b""


def _sig(rule: dict[str, Any], *principals: tuple[str, str]) -> dict[str, Any]:
    policy = {"type": "signature", "rule": rule, "principals": [{"msp_id": m, "role": r} for m, r in principals]}
    pol.check(policy, "test")
    return policy


AND = _sig({"n_out_of": {"n": 2, "rules": [{"signed_by": 0}, {"signed_by": 1}]}}, ("H", "peer"), ("I", "peer"))
H_PEER = Signer("H", frozenset({"member", "peer"}))
I_PEER = Signer("I", frozenset({"member", "peer"}))
I_CLIENT = Signer("I", frozenset({"member", "client"}))


def test_signature_policies_follow_fabric() -> None:
    assert pol.satisfied(AND, [H_PEER, I_PEER])
    assert not pol.satisfied(AND, [H_PEER])
    assert not pol.satisfied(AND, [H_PEER, I_CLIENT])  # the role matters
    both_h = _sig({"n_out_of": {"n": 2, "rules": [{"signed_by": 0}, {"signed_by": 0}]}}, ("H", "peer"))
    assert not pol.satisfied(both_h, [H_PEER]), "one signer satisfies one principal only"
    assert pol.satisfied(both_h, [H_PEER, Signer("H", frozenset({"peer"}), b"other")])
    assert pol.describe(AND) == "AND('H.peer', 'I.peer')"


@pytest.mark.parametrize(("rule", "oks", "want"), [("ANY", 1, True), ("ALL", 1, False), ("MAJORITY", 2, True)])
def test_implicit_meta_policies(rule: str, oks: int, want: bool) -> None:
    subs = [_sig({"signed_by": 0}, (m, "member")) for m in ("A", "B", "C")]
    meta = {"type": "implicit_meta", "rule": rule, "sub_policy": "Writers", "policies": subs}
    pol.check(meta, "test")
    signers = [Signer(m, frozenset({"member"})) for m in ("A", "B", "C")[:oks]]
    assert pol.satisfied(meta, signers) is want


def test_a_malformed_policy_is_named() -> None:
    with pytest.raises(TrustFileError, match="principals"):
        pol.check({"type": "signature", "rule": {"signed_by": 0}, "principals": [{"msp_id": "H", "role": "x"}]}, "p")
    with pytest.raises(TrustFileError, match="signed_by"):
        pol.check({"type": "signature", "rule": {"signed_by": 3}, "principals": []}, "p")


@pytest.mark.parametrize(
    ("n_subs", "oks", "want"),
    [(2, 1, False), (2, 2, True), (3, 1, False), (3, 2, True), (4, 2, False), (4, 3, True), (5, 2, False)],
)
def test_majority_means_more_than_half(n_subs: int, oks: int, want: bool) -> None:
    names = [chr(ord("A") + i) for i in range(n_subs)]
    subs = [_sig({"signed_by": 0}, (m, "member")) for m in names]
    meta = {"type": "implicit_meta", "rule": "MAJORITY", "sub_policy": "Writers", "policies": subs}
    assert pol.satisfied(meta, [Signer(m, frozenset({"member"})) for m in names[:oks]]) is want
    all_of = dict(meta, rule="ALL")
    assert pol.satisfied(all_of, [Signer(m, frozenset({"member"})) for m in names[:oks]]) is (oks == n_subs)


def test_n_out_of_counts_exactly() -> None:
    none = _sig({"n_out_of": {"n": 0, "rules": [{"signed_by": 0}]}}, ("H", "peer"))
    assert pol.satisfied(none, [])  # 0 of anything: always
    one = _sig({"n_out_of": {"n": 1, "rules": [{"signed_by": 0}]}}, ("H", "peer"))
    assert not pol.satisfied(one, []) and pol.satisfied(one, [H_PEER])
    with pytest.raises(TrustFileError, match="signed_by"):
        pol.check({"type": "signature", "rule": {"signed_by": 1}, "principals": [{"msp_id": "H", "role": "peer"}]}, "p")
    with pytest.raises(TrustFileError):
        pol.check({"type": "signature", "rule": {"n_out_of": {"n": 1}}, "principals": []}, "p")
    with pytest.raises(TrustFileError):
        pol.check(["not", "a", "policy"], "p")


def test_the_report_names_each_field() -> None:
    result = _verifier().verify(json.dumps(BUNDLE), record=RECORD)
    doc = result.to_dict(AnchorPolicy())
    receipt = BUNDLE["receipt"]
    assert {k: doc[k] for k in ("proof_id", "hash", "hash_received", "state")} == {
        k: receipt[k] for k in ("proof_id", "hash", "hash_received", "state")
    }
    assert doc["root"] == result.root and doc["valid"] is True
    fabric = next(a for a in doc["anchors"] if a["type"] == "fabric")
    assert set(fabric) == {"type", "anchor_id", "status", "reason", "expected_value", "details"}
    assert fabric["expected_value"] == result.root and fabric["status"] == "verified"
    bare = Verifier([]).verify(json.dumps(BUNDLE["receipt"]))  # no trust, no blocks
    details = next(a.details for a in bare.anchors if a.type == "fabric")
    assert set(details) == {"channel", "block_number", "tx_id"}
    assert AnchorPolicy.parse("any").describe() == "at least one anchor verified"
    assert AnchorPolicy.parse("all").describe() == "every anchor verified"
    assert AnchorPolicy.parse("2").describe() == "at least 2 anchors verified"


def test_a_fabric_anchor_of_another_tree_is_refused_offline() -> None:
    bundle = copy.deepcopy(BUNDLE)
    bundle["receipt"]["tree"]["tree_index"] += 1  # the leaf path is unchanged; the anchors' key is not this tree
    result = _verifier().verify(json.dumps(bundle), record=RECORD)
    fabric = [a for a in result.anchors if a.type == "fabric"]
    assert fabric and all(a.status is AnchorStatus.FAILED and "is not this receipt's tree" in a.reason for a in fabric)


def _blocks() -> dict[tuple[str, int], bytes]:
    return {(b["channel"], b["number"]): base64.b64decode(b["block"]) for b in BUNDLE["fabric_blocks"]}


def test_verify_policy_passes_the_record_and_the_blocks_on() -> None:
    """A receipt and its blocks given apart (not as one bundle), through verify_policy."""
    receipt = json.dumps(BUNDLE["receipt"])
    result = _verifier().verify_policy(receipt, AnchorPolicy("all"), record=RECORD, blocks=_blocks())
    assert [a.status for a in result.anchors] == [AnchorStatus.VERIFIED] * 4
    with pytest.raises(Exception, match="the record's SHA-256"):
        _verifier().verify_policy(receipt, AnchorPolicy("all"), record=RECORD + b" ", blocks=_blocks())
    with pytest.raises(Exception, match=r"1 of 4 anchors verified; the policy requires all \(fabric "):
        _verifier().verify_policy(receipt, AnchorPolicy("all"), record=RECORD)


def test_fabric_anchors_without_evidence_or_trust_say_what_is_missing() -> None:
    receipt = json.dumps(BUNDLE["receipt"])
    fabric = [a for a in _verifier().verify(receipt).anchors if a.type == "fabric"]
    assert fabric and all(
        a.status is AnchorStatus.NOT_VERIFIED
        and a.reason.startswith("no evidence: block ")
        and a.reason.endswith(" was not supplied (fetch the receipt with ?evidence=embed)")
        for a in fabric
    )
    untrusted = Verifier([load_public_key_file(FABRIC / "ledger-key.pub.json")])
    fabric = [a for a in untrusted.verify(receipt, blocks=_blocks()).anchors if a.type == "fabric"]
    assert {a.reason for a in fabric} == {"no trust file: pass --trust to check Fabric anchors"}


def test_a_failed_fabric_check_names_the_error_class() -> None:
    bundle = copy.deepcopy(BUNDLE)
    bundle["receipt"]["tree"]["tree_index"] += 1
    fabric = [a for a in _verifier().verify(json.dumps(bundle), record=RECORD).anchors if a.type == "fabric"]
    assert fabric and all(a.reason.startswith("FabricEvidenceError: ") or "Error: " in a.reason for a in fabric)
    assert all(a.reason.split(":")[0].endswith("Error") for a in fabric)


@pytest.mark.parametrize(
    ("policy", "statuses", "reason"),
    [
        ("all", [], "the receipt has no anchor yet"),
        ("all", ["failed"], "0 of 1 anchor verified; the policy requires all"),
        ("all", ["verified", "failed"], "1 of 2 anchors verified; the policy requires all"),
        ("any", ["failed", "failed"], "no anchor verified; the policy requires at least one"),
        ("any", ["failed", "verified"], None),
        ("2", ["verified", "failed"], "1 anchor verified; the policy requires 2"),
        ("3", ["verified", "verified", "failed"], "2 anchors verified; the policy requires 3"),
        ("2", ["verified", "verified"], None),
        ("0", [], None),
    ],
)
def test_policy_reasons_are_exact(policy: str, statuses: list[str], reason: str | None) -> None:
    from receipt_verifier.verify import AnchorResult

    anchors = tuple(AnchorResult("local", f"k:{i}", AnchorStatus(s), "r", "") for i, s in enumerate(statuses))
    assert AnchorPolicy.parse(policy).unmet_reason(anchors) == reason


def test_the_json_report_lists_pending_anchors() -> None:
    doc = json.loads((VECTORS / "valid" / "aggregated.json").read_text())  # in a tree, waiting for its anchor
    report = _verifier().verify(doc).to_dict()
    assert report["pending_anchors"] == [f"{p['type']}:{p['target']}" for p in doc["pending_anchors"]]
    assert report["pending_anchors"]


def test_a_bundle_is_read_from_text_and_from_bytes_alike() -> None:
    text = json.dumps(BUNDLE)
    for given in (text, text.encode()):
        result = _verifier().verify(given, record=RECORD)
        assert [a.status for a in result.anchors] == [AnchorStatus.VERIFIED] * 4


def test_policy_errors_list_each_unverified_anchor_once() -> None:
    from receipt_verifier.errors import AnchorPolicyError

    receipt = json.dumps(BUNDLE["receipt"])
    with pytest.raises(AnchorPolicyError) as info:
        _verifier().verify_policy(receipt, AnchorPolicy("all"), record=RECORD)
    text = str(info.value)
    pid = BUNDLE["receipt"]["proof_id"]
    assert text.startswith(f"receipt {pid}: 1 of 4 anchors verified; the policy requires all (fabric ")
    assert text.count("; fabric ") == 2 and text.endswith("(fetch the receipt with ?evidence=embed))")
    pending = json.loads((VECTORS / "valid" / "pending.json").read_text())
    with pytest.raises(AnchorPolicyError) as info:
        _verifier().verify_policy(pending, AnchorPolicy("all"))
    assert str(info.value) == f"receipt {pending['proof_id']}: the receipt has no anchor yet"


def test_policies_are_described_as_fabric_writes_them() -> None:
    one_of = _sig({"n_out_of": {"n": 1, "rules": [{"signed_by": 0}, {"signed_by": 1}]}}, ("H", "peer"), ("I", "admin"))
    two_of_three = _sig(
        {"n_out_of": {"n": 2, "rules": [{"signed_by": 0}, {"signed_by": 1}, {"signed_by": 2}]}},
        ("H", "peer"),
        ("I", "peer"),
        ("J", "member"),
    )
    assert pol.describe(one_of) == "OR('H.peer', 'I.admin')"
    assert pol.describe(two_of_three) == "OutOf(2, 'H.peer', 'I.peer', 'J.member')"
    meta = {"type": "implicit_meta", "rule": "MAJORITY", "sub_policy": "Endorsement", "policies": [AND, one_of]}
    pol.check(meta, "test")
    assert pol.describe(meta) == "MAJORITY Endorsement of [AND('H.peer', 'I.peer'), OR('H.peer', 'I.admin')]"
    unnamed = {"type": "implicit_meta", "rule": "ANY", "policies": [AND]}
    assert pol.describe(unnamed) == "ANY  of [AND('H.peer', 'I.peer')]"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"type": "signature", "rule": 5, "principals": []}, "p: a rule is signed_by <index> or n_out_of {n, rules}"),
        (
            {"type": "signature", "rule": {"n_out_of": {"n": 1, "rules": [7]}}, "principals": []},
            "p: a rule is signed_by <index> or n_out_of {n, rules}",
        ),
        (
            {"type": "implicit_meta", "rule": "SOME", "policies": []},
            "p: an implicit_meta policy has rule ANY|ALL|MAJORITY and policies",
        ),
        (
            {"type": "implicit_meta", "rule": "ANY", "policies": {}},
            "p: an implicit_meta policy has rule ANY|ALL|MAJORITY and policies",
        ),
        (
            {"type": "implicit_meta", "rule": "ANY", "policies": [AND, {"type": "x"}]},
            "p.policies[1]: policy type must be 'signature' or 'implicit_meta'",
        ),
        ({"type": "other"}, "p: policy type must be 'signature' or 'implicit_meta'"),
    ],
    ids=range(6),
)
def test_malformed_policies_get_their_exact_message(policy: Any, message: str) -> None:
    with pytest.raises(TrustFileError) as err:
        pol.check(policy, "p")
    assert str(err.value) == message


def test_role_and_identity_principals_are_read_from_a_policy_envelope() -> None:
    """Roles (every policy but BFT's), identities (BFT's SignedBy(consenter_i)); anything else is refused."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from fabric_protos.common import policies_pb2
    from fabric_protos.msp import identities_pb2, msp_principal_pb2

    from tests.fabric_forge import Signer

    role = msp_principal_pb2.MSPRole(msp_identifier="H", role=msp_principal_pb2.MSPRole.MSPRoleType.PEER)
    env = policies_pb2.SignaturePolicyEnvelope(
        rule=policies_pb2.SignaturePolicy(signed_by=0),
        identities=[msp_principal_pb2.MSPPrincipal(principal=role.SerializeToString())],
    )
    assert pol.from_signature_envelope(env.SerializeToString()) == {
        "type": "signature",
        "rule": {"signed_by": 0},
        "principals": [{"msp_id": "H", "role": "peer"}],
    }
    consenter = Signer.rogue("RegulatorMSP", "orderer2.regulator")
    pem = bytes(identities_pb2.SerializedIdentity.FromString(consenter.serialized).id_bytes)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    env.identities[0].principal_classification = msp_principal_pb2.MSPPrincipal.Classification.IDENTITY
    env.identities[0].principal = consenter.serialized
    assert pol.from_signature_envelope(env.SerializeToString())["principals"] == [
        {"msp_id": "RegulatorMSP", "identity_sha256": hashlib.sha256(der).hexdigest()}
    ]
    env.identities[0].principal = identities_pb2.SerializedIdentity(
        mspid="R", id_bytes=b"not a pem"
    ).SerializeToString()
    with pytest.raises(TrustFileError) as err:
        pol.from_signature_envelope(env.SerializeToString())
    assert str(err.value) == "an identity principal carries no valid PEM certificate"
    env.identities[0].principal_classification = msp_principal_pb2.MSPPrincipal.Classification.ORGANIZATION_UNIT
    with pytest.raises(TrustFileError) as err:
        pol.from_signature_envelope(env.SerializeToString())
    assert str(err.value) == "only role and identity principals are supported"


# ---- the checker itself, on the captured blocks (each check with its exact message)


HISTORY: dict[str, Any] = json.loads((FABRIC / "history.json").read_text())


def _anchor(doc_anchor: dict[str, Any], **changes: Any) -> FabricAnchor:
    a = {**doc_anchor, **changes}
    return FabricAnchor(a["anchor_id"], a["channel"], a["tx_id"], a["block_number"], a["key"], a["chaincode"])


def _captured(
    channel: str = "medical-history",
) -> tuple[FabricAnchor, bytes, dict[tuple[str, int], bytes], str, TreeInfo]:
    [anchors] = [op["anchors"] for op in BUNDLE["receipt"]["branches"][0]["ops"] if "anchors" in op]
    raw = next(a for a in anchors if a["type"] == "fabric" and a["channel"] == channel)
    blocks = parse_blocks(BUNDLE["fabric_blocks"])
    t = BUNDLE["receipt"]["tree"]
    tree = TreeInfo(t["window_id"], t["tree_index"], t["leaf_index"], t["tree_size"])
    root = _verifier().verify(json.dumps(BUNDLE)).root
    return _anchor(raw), blocks[(channel, raw["block_number"])], blocks, root, tree


def test_the_checker_names_signers_and_gives_every_detail() -> None:
    anchor, block, blocks, root, tree = _captured()
    reason, details = FabricChecker(dict(load_trust(TRUST))).check(anchor, block, root, tree, blocks)
    assert sorted(details) == ["block_hash", "config_block", "endorsers", "orderers", "tx_time"]  # a v1 tree: no heads
    assert reason == (
        f"block {anchor.block_number} of {anchor.channel} signed by {', '.join(details['orderers'])};"
        f" tx endorsed by {', '.join(details['endorsers'])}"
    )
    assert len(details["endorsers"]) == 2 and details["config_block"] == 0 and len(details["block_hash"]) == 64
    tx_time = datetime.strptime(details["tx_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    received = datetime.strptime(BUNDLE["receipt"]["hash_received"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    assert timedelta(0) < tx_time - received < timedelta(seconds=60)  # anchored just after it was received


def test_a_domain_windows_write_carries_its_heads() -> None:
    w = HISTORY["window"]
    raw = next(a for a in w["anchors"] if a["type"] == "fabric")
    blocks = parse_blocks(HISTORY["fabric_blocks"])
    tree = TreeInfo(w["window_id"], w["tree_index"], 0, w["tree_size"])
    _, details = FabricChecker(dict(load_trust(TRUST))).check(
        _anchor(raw), blocks[(raw["channel"], raw["block_number"])], w["root"], tree, blocks
    )
    assert (details["heads_root"], details["heads_size"], details["window_end"]) == (
        w["heads_root"],
        w["heads_size"],
        w["window_end"],
    )


def test_the_checker_refuses_each_mismatch_by_name() -> None:
    anchor, block, _, root, tree = _captured()
    checker = FabricChecker(dict(load_trust(TRUST)))
    with pytest.raises(ChannelMismatchError) as err:
        checker.check(_anchor({**anchor.__dict__, "chaincode": "anchor"}, channel="elsewhere"), block, root, tree)
    assert str(err.value) == "channel elsewhere is not in the trust file"
    other = anchor.block_number + 1
    with pytest.raises(BlockFormatError) as err:
        checker.check(_anchor({**anchor.__dict__}, block_number=other), block, root, tree)
    assert str(err.value) == f"the evidence is block {anchor.block_number}, the anchor names block {other}"
    missing = "ab" * 32
    with pytest.raises(BlockFormatError) as err:
        checker.check(_anchor({**anchor.__dict__}, tx_id=missing), block, root, tree)
    assert str(err.value) == f"transaction {missing} is not in block {anchor.block_number}"


def test_a_block_whose_orderer_signature_is_flipped_names_the_policy() -> None:
    from fabric_protos.common import common_pb2

    anchor, block, _, root, tree = _captured()
    parsed = common_pb2.Block.FromString(block)
    md = common_pb2.Metadata.FromString(parsed.metadata.metadata[common_pb2.BlockMetadataIndex.SIGNATURES])
    sig = bytearray(md.signatures[0].signature)
    sig[-1] ^= 1
    md.signatures[0].signature = bytes(sig)
    parsed.metadata.metadata[common_pb2.BlockMetadataIndex.SIGNATURES] = md.SerializeToString()
    trust = load_trust(TRUST)
    with pytest.raises(OrdererSignatureError) as err:
        FabricChecker(dict(trust)).check(anchor, parsed.SerializeToString(), root, tree)
    policy = pol.describe(trust[anchor.channel].block_validation)
    text = str(err.value)
    assert text.startswith(
        f"block {anchor.block_number}: orderer signatures do not satisfy {policy} ("
    ) and text.endswith(")")
    assert "valid signature(s)" not in text  # the detail is the failed signature's own error
