"""SmartBFT evidence offline, over blocks captured from four orderers of four organisations
(``proof_spec/vectors/fabric-bft``, from ``capture_fabric_vectors.py --consensus bft``): the trust file
shows the consenters and the quorum, the captured anchors verify, the BFT corpus and the shared corpus
fail with their exact reasons, and an anchor made under a newer config verifies only through a config
block that a quorum of the pinned consenters signed."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest
from fabric_protos.common import common_pb2, configtx_pb2, configuration_pb2, policies_pb2
from fabric_protos.msp import identities_pb2, msp_principal_pb2

from receipt_verifier import Verifier
from receipt_verifier.errors import HistoryError
from receipt_verifier.fabric.blocks import header_bytes
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.history import verify_history
from receipt_verifier.ledger import load_public_key_file
from receipt_verifier.verify import AnchorResult, AnchorStatus
from tests.conftest import VECTORS
from tests.fabric_forge import Forger, Signer
from tests.fabric_tampering import BFT_CASES, CASES, HARMLESS, Facts, bft_expected, expected, fabric_anchor, tampered

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
    return tampered(BUNDLE, Forger.of_keys(KEYS), case)


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


def _drop_last_consenter(block: Any) -> None:
    """The config block with consenter 4 removed and the BlockValidation policy recomputed as
    configtxgen does: NOutOf(ceil((n + f + 1) / 2)) over the remaining consenters (2 of 3)."""
    env = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(env.payload)
    cfg = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    orderer = cfg.config.channel_group.groups["Orderer"]
    mapping = configuration_pb2.Orderers.FromString(orderer.values["Orderers"].value)
    del mapping.consenter_mapping[3]
    orderer.values["Orderers"].value = mapping.SerializeToString()
    principals = [
        msp_principal_pb2.MSPPrincipal(
            principal_classification=msp_principal_pb2.MSPPrincipal.Classification.IDENTITY,
            principal=identities_pb2.SerializedIdentity(mspid=c.msp_id, id_bytes=c.identity).SerializeToString(),
        )
        for c in mapping.consenter_mapping
    ]
    rule = policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(
            n=2, rules=[policies_pb2.SignaturePolicy(signed_by=i) for i in range(len(principals))]
        )
    )
    envelope = policies_pb2.SignaturePolicyEnvelope(rule=rule, identities=principals)
    orderer.policies["BlockValidation"].policy.value = envelope.SerializeToString()
    payload.data = cfg.SerializeToString()
    env.payload = payload.SerializeToString()
    block.data.data[0] = env.SerializeToString()


def _signed_by(block: Any, forger: Forger, ids: list[int], last_config: int | None = None) -> bytes:
    """Reseal, then keep exactly the BFT signatures of these consenter ids (the forger's orderers 1..4)."""
    forger.reseal(block, last_config=last_config)
    md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
    del md.signatures[:]
    der = header_bytes(block.header.number, bytes(block.header.previous_hash), bytes(block.header.data_hash))
    for ident in ids:
        Forger.consenter_sign(md, der, ident, forger.orderers[ident - 1])
    block.metadata.metadata[0] = md.SerializeToString()
    return bytes(block.SerializeToString())


@pytest.mark.parametrize("config_signers", [[1, 2, 3], [1, 2]])
def test_a_consenter_removed_by_a_config_update_is_followed(config_signers: list[int]) -> None:
    """A config block that removes consenter 4 (n = 3, quorum 2), signed by a quorum of the pinned
    consenters, becomes the config later blocks are checked under: a block that two consenters signed
    verifies under it (it would not under the pinned 3 of 4). Signed by two pinned consenters only, the
    config block is refused, and so is the anchor."""
    channel = "personal-health"
    forged = copy.deepcopy(NEWER)
    _, item = fabric_anchor(forged, channel)
    config = _config_item(forged, channel)
    number = config["number"]
    forger = Forger.of_keys(KEYS)
    cfg_block = common_pb2.Block.FromString(base64.b64decode(config["block"]))
    _drop_last_consenter(cfg_block)
    config["block"] = base64.b64encode(_signed_by(cfg_block, forger, config_signers)).decode()
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(_signed_by(block, forger, [1, 2], last_config=number)).decode()
    got = _on(forged, channel)
    if len(config_signers) == 3:
        assert got.status is AnchorStatus.VERIFIED, got.reason
        assert got.reason.endswith(f"; under config block {number}, verified under the pinned one")
        assert len(got.reason.split("signed by ", 1)[1].split(";", 1)[0].split(", ")) == 2
    else:
        assert got.status is AnchorStatus.FAILED
        assert got.reason.startswith(
            f"ConfigMismatchError: config block {number} does not verify under the pinned config"
        )
        assert "(2 distinct consenter(s) signed, the quorum is 3)" in got.reason


def _edit_config(block: Any, edit: Any) -> None:
    env = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(env.payload)
    cfg = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    edit(cfg.config.channel_group.groups["Orderer"])
    payload.data = cfg.SerializeToString()
    env.payload = payload.SerializeToString()
    block.data.data[0] = env.SerializeToString()


def _weaker_policy(orderer: Any) -> None:
    """BlockValidation lowered to one consenter of four (Fabric's BFT orderers refuse such a config)."""
    env = policies_pb2.SignaturePolicyEnvelope.FromString(orderer.policies["BlockValidation"].policy.value)
    env.rule.n_out_of.n = 1
    orderer.policies["BlockValidation"].policy.value = env.SerializeToString()


def _one_certificate_twice(orderer: Any) -> None:
    """Consenter 4 carries consenter 1's certificate (PEM with other line breaks), and the policy with it."""
    mapping = configuration_pb2.Orderers.FromString(orderer.values["Orderers"].value)
    pem = bytes(mapping.consenter_mapping[0].identity).replace(b"\n", b"\r\n")
    mapping.consenter_mapping[3].msp_id = mapping.consenter_mapping[0].msp_id
    mapping.consenter_mapping[3].identity = pem
    orderer.values["Orderers"].value = mapping.SerializeToString()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_weaker_policy, "the BFT block validation policy is not the quorum of the consenter mapping"),
        (_one_certificate_twice, "the consenter mapping names one certificate twice"),
    ],
)
def test_a_bft_config_fabric_would_refuse_is_refused(edit: Any, reason: str) -> None:
    """Pinned, or as a newer config block signed by a quorum of the pinned consenters."""
    from receipt_verifier.errors import TrustFileError
    from receipt_verifier.fabric.trust import make_trust

    genesis = common_pb2.Block.FromString(base64.b64decode(TRUST["channels"]["insurance"]["config_block"]))
    _edit_config(genesis, edit)
    genesis.header.data_hash = hashlib.sha256(b"".join(genesis.data.data)).digest()  # an operator's own genesis
    with pytest.raises(TrustFileError, match=reason):
        make_trust([genesis.SerializeToString()])
    channel = "personal-health"
    forged = copy.deepcopy(NEWER)
    config = _config_item(forged, channel)
    block = common_pb2.Block.FromString(base64.b64decode(config["block"]))
    _edit_config(block, edit)
    config["block"] = base64.b64encode(_signed_by(block, Forger.of_keys(KEYS), [1, 2, 3])).decode()
    got = _on(forged, channel)
    assert got.status is AnchorStatus.FAILED
    assert got.reason.startswith(f"ConfigMismatchError: config block {config['number']}: ") and reason in got.reason


def test_a_verified_config_block_in_the_cache_is_still_checked_for_its_number() -> None:
    """A config block once verified, offered again under another number, is refused as on a first look."""
    channel = "personal-health"
    verifier = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
    assert all(a.status is AnchorStatus.VERIFIED for a in verifier.verify(json.dumps(NEWER)).anchors)
    forged = copy.deepcopy(NEWER)
    _, item = fabric_anchor(forged, channel)
    config = _config_item(forged, channel)
    wrong = item["number"] - 1 if item["number"] - 1 != config["number"] else item["number"] - 2
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(_signed_by(block, Forger.of_keys(KEYS), [1, 2, 3], last_config=wrong)).decode()
    config["number"] = wrong
    for v in (verifier, Verifier([], fabric_trust=load_trust(TRUST))):
        got = next(a for a in v.verify(json.dumps(forged)).anchors if a.anchor_id.startswith(channel + ":"))
        assert got.status is AnchorStatus.FAILED
        assert got.reason.endswith(
            f"the evidence's config block is block {_config_item(NEWER, channel)['number']}, not {wrong}"
        )


HISTORY: dict[str, Any] = json.loads((BFT / "history.json").read_text())


def test_the_captured_chained_history_verifies_and_needs_its_indexed_head_proof() -> None:
    """A chained window's heads are the indexed heads tree the peers checked (spec section 14.9): a bundle
    that offers a proof of the sorted heads tree instead (no ``next`` in its member) is refused."""
    trust = load_trust(TRUST)
    report, records = verify_history(HISTORY, {}, fabric_trust=trust)
    assert (report.complete, report.size, len(records), report.problems) == (True, 3, 3, [])
    assert report.append_only == (
        "checked by both organisations' peers: Fabric medical-history block 7"
        " (chained: window 0 of lane medical-history on medical-history)"
    )
    assert report.committed is not None and "not proven by a successor" in report.committed
    sorted_form = copy.deepcopy(HISTORY)
    del sorted_form["head_proof"]["member"]["next"]
    with pytest.raises(HistoryError) as err:
        verify_history(sorted_form, {}, fabric_trust=trust)
    assert str(err.value) == "the window is chained, but its head proof is of the sorted heads tree (heads v1)"


def _other_version(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    """The same block (every transaction, the anchor's too) under another previous hash, signed by a quorum."""
    block.header.previous_hash = bytes(32)
    return f.reseal(block)


def test_two_signed_versions_of_one_block_are_an_ordering_fork() -> None:
    """The attacker holds three of the four consenters' keys (more than BFT tolerates) and signs a second
    version of a block: each bundle verifies alone, and a verifier that sees both names the fork and the
    orderers that signed both versions."""
    second, facts = _tampered(_other_version)
    verifier = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
    assert {a.status for a in verifier.verify(json.dumps(BUNDLE)).anchors} == {AnchorStatus.VERIFIED}
    alone = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
    assert {a.status for a in alone.verify(json.dumps(second)).anchors} == {AnchorStatus.VERIFIED}
    got = verifier.verify(json.dumps(second)).anchors
    [forked] = [a for a in got if a.status is not AnchorStatus.VERIFIED]
    assert forked.anchor_id.startswith("insurance:") and forked.status is AnchorStatus.FAILED
    assert {a.status for a in verifier.verify(json.dumps(BUNDLE)).anchors} == {AnchorStatus.VERIFIED}  # seen first
    both = sorted(set(_on(BUNDLE).details["orderers"]) & set(facts.orderers[:3]))
    assert both and forked.reason.startswith(f"ordering fork: block {facts.n} of insurance exists in two versions")
    assert forked.reason.endswith(f"; signed both: {', '.join(both)}")
    assert dict(forked.details) == {k: _on(BUNDLE).details[k] for k in ("channel", "block_number", "tx_id")}


def _in_both_modes(
    bundles: list[dict[str, Any]], tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The JSON report of ``receipt-verify`` on these bundles (one a line), which must be the same byte for
    byte in one process and in two workers taking a bundle a piece (so a fork's two versions mostly part)."""
    import functools

    from receipt_verifier._cli import main, receipts, workers

    batch = tmp_path / "bundles.jsonl"
    batch.write_text("".join(json.dumps(b) + "\n" for b in bundles))
    monkeypatch.setattr(receipts, "PARALLEL_FROM", 0)
    monkeypatch.setattr(workers, "line_ranges", functools.partial(workers.line_ranges, size=4096))
    argv = [str(batch), "--ledger-key", str(BFT / "ledger-key.pub.json"), "--trust", str(BFT / "trust.json"), "--json"]
    texts = []
    for jobs in ("1", "2"):
        assert main([*argv, "--jobs", jobs]) == 1
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]
    report: dict[str, Any] = json.loads(texts[0])
    return report


def test_an_ordering_fork_across_workers_is_caught_as_in_one_process(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:

    second, facts = _tampered(_other_version)
    report = _in_both_modes([BUNDLE, second] * 4 + [second, BUNDLE] * 4, tmp_path, capsys, monkeypatch)
    assert [r["valid"] for r in report["results"]] == [n % 2 == 0 for n in range(8)] + [n % 2 == 1 for n in range(8)]
    reasons = {
        a["reason"].split(" (headers")[0] for r in report["results"] for a in r["anchors"] if a["status"] == "failed"
    }
    assert reasons == {
        f"ordering fork: block {facts.n} of insurance exists in two versions, each signed under the channel's policy"
    }


def test_a_block_made_under_a_newer_config_needs_that_config_in_each_bundle() -> None:
    """A verdict rests on its own evidence, whatever was checked before (and so whichever worker checks
    it): a bundle without the newer config block its anchor's block was made under fails the same way
    after a bundle that carried it."""
    without = copy.deepcopy(NEWER)
    without["fabric_blocks"] = [
        b for b in NEWER["fabric_blocks"] if (b["channel"], b["number"]) != ("personal-health", 7)
    ]

    def verdicts(*bundles: dict[str, Any]) -> list[list[tuple[str, str]]]:
        v = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
        return [[(a.status.value, a.reason) for a in v.verify(json.dumps(b)).anchors] for b in bundles]

    [alone] = verdicts(without)
    failed = [r for r in alone if r[0] == "failed"]
    assert len(failed) == 1 and "the evidence does not include block 7" in failed[0][1]
    assert verdicts(NEWER, without, NEWER)[1:] == [alone, verdicts(NEWER)[0]]
    # a copy of that config block with the same header but no orderer signature (they lie outside the header)
    unsigned = copy.deepcopy(NEWER)
    config = _config_item(unsigned, "personal-health")
    block = common_pb2.Block.FromString(base64.b64decode(config["block"]))
    md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
    del md.signatures[:]
    block.metadata.metadata[0] = md.SerializeToString()
    config["block"] = base64.b64encode(block.SerializeToString()).decode()
    [bare] = verdicts(unsigned)
    assert [r[0] for r in bare].count("failed") == 1
    assert "config block 7 does not verify under the pinned config" in next(r[1] for r in bare if r[0] == "failed")
    assert verdicts(NEWER, unsigned)[1] == bare


def _config_forked() -> dict[str, Any]:
    """NEWER with a second version of personal-health's config block (consenter 4 dropped), signed by three
    pinned consenters, and the anchor's block signed under it by two: each verifies on its own."""
    forged = copy.deepcopy(NEWER)
    _, item = fabric_anchor(forged, "personal-health")
    config = _config_item(forged, "personal-health")
    forger = Forger.of_keys(KEYS)
    cfg_block = common_pb2.Block.FromString(base64.b64decode(config["block"]))
    _drop_last_consenter(cfg_block)
    config["block"] = base64.b64encode(_signed_by(cfg_block, forger, [1, 2, 3])).decode()
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(_signed_by(block, forger, [1, 2], last_config=config["number"])).decode()
    return forged


def test_two_signed_versions_of_a_config_block_are_an_ordering_fork(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The more dangerous fork: a second version of a config block (here one that lowers the quorum to two),
    signed by a quorum of the pinned consenters; each bundle verifies alone, together the anchor made under
    the version seen second fails, in one process and across workers alike."""

    forged = _config_forked()
    assert _on(forged, "personal-health").status is AnchorStatus.VERIFIED  # alone
    number = _config_item(NEWER, "personal-health")["number"]
    verifier = Verifier([load_public_key_file(BFT / "ledger-key.pub.json")], fabric_trust=load_trust(TRUST))
    assert {a.status for a in verifier.verify(json.dumps(NEWER)).anchors} == {AnchorStatus.VERIFIED}
    got = verifier.verify(json.dumps(forged)).anchors
    [failed] = [a for a in got if a.status is not AnchorStatus.VERIFIED]
    assert failed.anchor_id.startswith("personal-health:") and failed.status is AnchorStatus.FAILED
    assert failed.reason.startswith(f"ordering fork: block {number} of personal-health exists in two versions")

    report = _in_both_modes([NEWER, forged, forged, NEWER] * 3, tmp_path, capsys, monkeypatch)
    assert [r["valid"] for r in report["results"]] == [True, False, False, True] * 3
