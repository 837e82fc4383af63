"""The Fabric tamper corpus over the captured vector, offline: each tampered block fails with the exact
reason of its own check, harmless changes still verify, and an anchor made under a newer channel
config verifies only through a config block that itself verifies under the pinned one."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fabric_protos.common import common_pb2

from receipt_verifier import Verifier
from receipt_verifier.errors import TrustFileError
from receipt_verifier.evidence import parse_blocks
from receipt_verifier.fabric import evidence as fabric_evidence
from receipt_verifier.fabric.blocks import header_bytes
from receipt_verifier.fabric.evidence import FabricChecker
from receipt_verifier.fabric.trust import ChannelTrust, last_config_index, load_trust, make_trust
from receipt_verifier.ledger import load_public_key_file
from receipt_verifier.model import FabricAnchor
from receipt_verifier.verify import AnchorResult, AnchorStatus
from tests.conftest import VECTORS
from tests.fabric_forge import Forger, Signer
from tests.fabric_tampering import (
    BLOCK_POLICY,
    CASES,
    HARMLESS,
    Facts,
    expected,
    fabric_anchor,
    flip,
    tampered,
    written_record,
)

FABRIC = VECTORS / "fabric"
BUNDLE: dict[str, Any] = json.loads((FABRIC / "bundle.json").read_text())
NEWER: dict[str, Any] = json.loads((FABRIC / "bundle-newer-config.json").read_text())
TRUST: dict[str, Any] = json.loads((FABRIC / "trust.json").read_text())
KEYS: dict[str, Any] = json.loads((FABRIC / "forge-keys.json").read_text())


def _verifier(trust: dict[str, Any] = TRUST) -> Verifier:
    return Verifier([load_public_key_file(FABRIC / "ledger-key.pub.json")], fabric_trust=load_trust(trust))


def _on(bundle: dict[str, Any], channel: str, trust: dict[str, Any] = TRUST) -> AnchorResult:
    """The verdict on ``bundle``'s anchor on ``channel``; every other anchor must still verify."""
    result = _verifier(trust).verify(json.dumps(bundle))
    mine = next(a for a in result.anchors if a.anchor_id.startswith(channel + ":"))
    others = [a for a in result.anchors if a is not mine]
    assert all(a.status is AnchorStatus.VERIFIED for a in others), others
    return mine


def _tampered(case: Any, channel: str = "insurance") -> tuple[dict[str, Any], Facts]:
    return tampered(BUNDLE, Forger.of_keys(KEYS), case, channel)


def test_the_forge_keys_are_those_of_the_captured_network() -> None:
    """The tamper cases below only mean something if an untouched re-seal still verifies."""
    bundle, _ = _tampered(lambda b, f, a: f.reseal(b))
    got = _on(bundle, "insurance")
    assert got.status is AnchorStatus.VERIFIED, got.reason


@pytest.mark.parametrize("name", list(CASES))
def test_each_tampered_block_fails_with_its_own_reason(name: str) -> None:
    case, template = CASES[name]
    bundle, facts = _tampered(case)
    got = _on(bundle, "insurance")
    assert got.status is AnchorStatus.FAILED
    assert got.reason == expected(template, facts, "insurance")


@pytest.mark.parametrize("name", list(HARMLESS))
def test_changes_fabric_ignores_do_not_fail_the_anchor(name: str) -> None:
    case, template = HARMLESS[name]
    bundle, facts = _tampered(case)
    got = _on(bundle, "insurance")
    assert got.status is AnchorStatus.VERIFIED, got.reason
    assert got.reason == expected(template, facts, "insurance")


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_the_reason_and_details_name_signers_endorsers_and_the_tx_time(tz: str, monkeypatch: Any) -> None:
    """The transaction time is UTC whatever the auditor's local zone."""
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        bundle, facts = _tampered(lambda b, f, a: bytes(b.SerializeToString()))
        got = _on(bundle, "insurance")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert got.reason == (
        f"block {facts.n} of insurance signed by {', '.join(facts.signers)}; tx endorsed by {', '.join(facts.endorsers)}"
    )
    assert got.details["orderers"] == facts.signers
    assert got.details["endorsers"] == facts.endorsers
    assert got.details["config_block"] == 0
    assert got.details["tx_time"] == facts.tx_time


def test_the_checker_refuses_a_channel_pinned_under_another_name() -> None:
    channels = load_trust(TRUST)
    channels["research"] = channels["insurance"]
    channels["billing"] = channels["insurance"]
    with pytest.raises(TrustFileError) as err:
        FabricChecker(channels)
    assert str(err.value) == "channel(s) billing, research are pinned with another channel's config block"


def test_the_checker_checks_each_block_transaction_and_config_once(monkeypatch: Any) -> None:
    """Blocks, transactions and newer configs are cached by content, least recently used evicted first."""
    calls: dict[str, int] = {"parse": 0, "write": 0, "config": 0, "msps": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(fabric_evidence, "parse_block", counting("parse", fabric_evidence.parse_block))
    monkeypatch.setattr(fabric_evidence, "_writes", counting("write", fabric_evidence._writes))
    monkeypatch.setattr(fabric_evidence, "channel_trust", counting("config", fabric_evidence.channel_trust))
    monkeypatch.setattr(fabric_evidence, "_CACHE", 2)
    checker = FabricChecker(load_trust(TRUST))
    monkeypatch.setattr(ChannelTrust, "msps", counting("msps", ChannelTrust.msps))
    anchors = {ch: _checkable(BUNDLE, ch) for ch in ("insurance", "medical-history", "personal-health")}

    def check(ch: str, bundle: dict[str, Any] = BUNDLE) -> tuple[int, int]:
        before = calls["parse"], calls["write"]
        checker.check(*(anchors[ch] if bundle is BUNDLE else _checkable(bundle, ch)))
        return calls["parse"] - before[0], calls["write"] - before[1]

    assert [check(ch) for ch in anchors] == [(1, 1)] * 3  # each block parsed and its transaction read once
    assert check("personal-health") == (0, 0)  # the newest two are cached
    assert check("medical-history") == (0, 0)
    assert check("insurance") == (1, 1)  # the oldest was evicted
    assert calls["msps"] == 0  # the pinned configs' MSPs were built once, with the checker

    assert check(CHANNEL, NEWER) == (2, 1)  # the anchor's block and its newer config block
    assert calls["config"] == calls["msps"] == 1
    assert check(CHANNEL, NEWER) == (0, 0)
    checker._blocks.clear()
    checker._txs.clear()
    assert check(CHANNEL, NEWER) == (1, 1)  # the anchor's block again; its config, known by its bytes, is not
    checker._blocks.clear()
    checker._txs.clear()
    checker._config_copies.clear()
    assert check(CHANNEL, NEWER) == (2, 1)  # both blocks again, but the config is not read a second time
    assert calls["config"] == calls["msps"] == 1


def test_block_bytes_are_hashed_once_per_object_and_a_changed_copy_is_checked_anew(monkeypatch: Any) -> None:
    hashed: list[int] = []
    real = fabric_evidence.hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        hashed.append(len(data))
        return real(data)

    checker = FabricChecker(load_trust(TRUST))
    anchor, raw, root, tree, blocks = _checkable(BUNDLE, "insurance")
    checker.check(anchor, raw, root, tree, blocks)
    monkeypatch.setattr(fabric_evidence.hashlib, "sha256", counting)
    for _ in range(3):
        checker.check(anchor, raw, root, tree, blocks)
    assert len(raw) not in hashed  # the same object: its digest is kept
    same = bytes(bytearray(raw))  # equal bytes, another object: hashed once, then the checked block is found
    assert same is not raw
    checker.check(anchor, same, root, tree, blocks)
    assert hashed.count(len(raw)) == 1
    block = common_pb2.Block.FromString(raw)
    block.metadata.metadata[0] = block.metadata.metadata[0][:-1] + bytes([block.metadata.metadata[0][-1] ^ 1])
    with pytest.raises(fabric_evidence.FabricEvidenceError):  # a changed copy is parsed and checked again
        checker.check(anchor, block.SerializeToString(), root, tree, blocks)


def test_the_block_digests_hold_at_most_their_limit_of_bytes() -> None:
    digests = fabric_evidence._Digests(limit=100)
    chunks = [bytes([i]) * 40 for i in range(5)]
    for c in chunks:
        assert digests.of(c) == fabric_evidence.hashlib.sha256(c).hexdigest()
        assert digests.held <= 100
    big = b"x" * 101  # more than the limit: hashed, never held
    assert digests.of(big) == fabric_evidence.hashlib.sha256(big).hexdigest() and digests.held <= 100


def _checkable(bundle: dict[str, Any], channel: str) -> tuple[Any, ...]:
    """The checker's arguments for the bundle's anchor on ``channel``."""
    anchor, item = fabric_anchor(bundle, channel)
    fields = ("anchor_id", "channel", "tx_id", "block_number", "key", "chaincode")
    blocks = parse_blocks(bundle["fabric_blocks"])
    raw = base64.b64decode(item["block"])
    root = written_record(Forger.of_keys(KEYS).tx(common_pb2.Block.FromString(raw), anchor["tx_id"])[4])["root"]
    return FabricAnchor(**{k: anchor[k] for k in fields}), raw, root, None, blocks


# ---------------------------------------------------------------------- a newer channel config

CHANNEL = "personal-health"


def _config_item(bundle: dict[str, Any]) -> dict[str, Any]:
    anchor, _ = fabric_anchor(bundle, CHANNEL)
    return next(b for b in bundle["fabric_blocks"] if b["channel"] == CHANNEL and b["number"] != anchor["block_number"])


CONFIG_NUMBER = _config_item(NEWER)["number"]


def _with_config_block(change: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(NEWER)
    item = _config_item(bundle)
    item["block"] = base64.b64encode(change(base64.b64decode(item["block"]))).decode()
    return bundle


def _genesis(channel: str) -> bytes:
    """The pinned config block of ``channel``, as the trust file carries it."""
    return base64.b64decode(TRUST["channels"][channel]["config_block"])


def test_an_anchor_made_under_a_newer_config_verifies_through_it() -> None:
    assert CONFIG_NUMBER > 0
    got = _on(NEWER, CHANNEL)
    assert got.status is AnchorStatus.VERIFIED, got.reason
    anchor, item = fabric_anchor(NEWER, CHANNEL)
    facts = Facts.of(common_pb2.Block.FromString(base64.b64decode(item["block"])), anchor, Forger.of_keys(KEYS))
    assert got.reason == (
        f"block {facts.n} of {CHANNEL} signed by {', '.join(facts.signers)}; tx endorsed by"
        f" {', '.join(facts.endorsers)}; under config block {CONFIG_NUMBER}, verified under the pinned one"
    )
    assert got.details["config_block"] == CONFIG_NUMBER
    assert last_config_index(base64.b64decode(item["block"])) == CONFIG_NUMBER
    assert last_config_index(base64.b64decode(_config_item(NEWER)["block"])) == CONFIG_NUMBER


def _reseal(**kw: Any) -> Any:
    def change(raw: bytes) -> bytes:
        block = common_pb2.Block.FromString(raw)
        number = kw.pop("number", None)
        if number is not None:
            block.header.number = number
        return Forger.of_keys(KEYS).reseal(block, **kw)

    return change


CONFIG_CASES: dict[str, tuple[Any, str]] = {
    "left out of the evidence": (
        None,
        (
            "ConfigMismatchError: the block was made under config block {k}; the trust file pins block 0"
            " and the evidence does not include block {k}"
        ),
    ),
    "not a block": (
        lambda raw: b"\xff\xff\xff",
        (
            "ConfigMismatchError: config block {k}: BlockFormatError: the evidence is not a Fabric block"
            " (protobuf does not parse)"
        ),
    ),
    "a flipped byte": (
        lambda raw: flip(raw, len(raw) // 2),
        (
            "ConfigMismatchError: config block {k}: DataHashError: block {k}: the header's data hash does not match"
            " its 1 envelopes"
        ),
    ),
    "the genesis block in its place": (
        lambda raw: _genesis(CHANNEL),
        "ConfigMismatchError: the evidence's config block is block 0, not {k}",
    ),
    "re-signed naming an older config block": (
        _reseal(last_config=0),
        "ConfigMismatchError: block {k} is not a config block (it names config block 0)",
    ),
    "signed by an orderer nobody pinned": (
        lambda raw: _reseal(signer=Signer.rogue("OrdererMSP", "orderer9.orderer.receipts.test"))(raw),
        (
            "ConfigMismatchError: config block {k} does not verify under the pinned config: block {k}: orderer"
            " signatures do not satisfy {policy} (certificate CN=orderer9.orderer.receipts.test does not chain"
            " to a pinned root CA of OrdererMSP)"
        ),
    ),
    "another channel's config block": (
        lambda raw: _reseal(number=CONFIG_NUMBER, last_config=CONFIG_NUMBER)(_genesis("insurance")),
        "ChannelMismatchError: config block {k} is for channel insurance",
    ),
    "the anchor block in its place": (
        lambda raw: _reseal(number=CONFIG_NUMBER, last_config=CONFIG_NUMBER)(
            base64.b64decode(fabric_anchor(NEWER, CHANNEL)[1]["block"])
        ),
        (
            "ConfigMismatchError: config block {k}: not a usable config block: block {k} is not a config block"
            " (header type 3)"
        ),
    ),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_a_bad_newer_config_block_fails_with_its_own_reason(name: str) -> None:
    change, template = CONFIG_CASES[name]
    if change is None:
        bundle = copy.deepcopy(NEWER)
        bundle["fabric_blocks"].remove(_config_item(bundle))
    else:
        bundle = _with_config_block(change)
    got = _on(bundle, CHANNEL)
    assert got.status is AnchorStatus.FAILED
    assert got.reason == template.format(k=CONFIG_NUMBER, policy=BLOCK_POLICY)


def test_a_block_made_under_a_config_older_than_the_pinned_one_is_refused() -> None:
    newer_config = base64.b64decode(_config_item(NEWER)["block"])
    trust = make_trust([newer_config, *(_genesis(ch) for ch in TRUST["channels"] if ch != CHANNEL)])
    got = _on(BUNDLE, CHANNEL, trust)
    assert got.status is AnchorStatus.FAILED
    assert got.reason == (
        f"ConfigMismatchError: the block was made under config block 0, older than the pinned config block"
        f" {CONFIG_NUMBER}"
    )


def test_a_signature_by_id_on_a_raft_channel_is_ignored_as_fabric_does() -> None:
    """Raft channels here have the V3_0 capability, under which Fabric reads an identifier-header signature
    by consenter id; a Raft config has no consenter mapping, so the signature is skipped (not an error)."""

    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        f.reseal(block)
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        h = block.header
        Forger.consenter_sign(md, header_bytes(h.number, bytes(h.previous_hash), bytes(h.data_hash)), 1, f.orderer)
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())

    assert load_trust(TRUST)["insurance"].v3
    bundle, facts = _tampered(case)
    got = _on(bundle, "insurance")
    assert got.status is AnchorStatus.VERIFIED, got.reason
    assert got.reason.startswith(f"block {facts.n} of insurance signed by {facts.orderers[0]};")


def test_a_bundle_whose_config_block_contradicts_the_trust_file_warns_and_fails_under_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: the verdict rests on the pinned block; a bundle carrying another block of that number
    says so (a warning), and ``--strict`` fails the anchor."""
    from receipt_verifier._cli import main

    bundle = copy.deepcopy(BUNDLE)
    item = next(b for b in bundle["fabric_blocks"] if (b["channel"], b["number"]) == ("insurance", 0))
    item["block"] = base64.b64encode(flip(base64.b64decode(item["block"]), 200)).decode()
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    (tmp_path / "trust.json").write_text(json.dumps(TRUST))
    args = [str(tmp_path / "bundle.json"), "--trust", str(tmp_path / "trust.json")]
    args += ["--ledger-key", str(FABRIC / "ledger-key.pub.json"), "--jobs", "1"]
    warning = "the evidence holds a config block 0 of insurance that differs from the pinned one"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"warning: {tmp_path / 'bundle.json'}: {warning}" in out and "1 receipt(s) with warnings" in out
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["warnings"] == [warning] and report["summary"]["warned"] == 1
    assert main([*args, "--strict", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    insurance = next(a for a in report["results"][0]["anchors"] if a["anchor_id"].startswith("insurance:"))
    assert insurance["reason"] == f"ConfigMismatchError: {warning} (--strict)"
    (tmp_path / "clean.json").write_text(json.dumps(BUNDLE))  # an untouched bundle: no warning, strict or not
    assert main([str(tmp_path / "clean.json"), *args[1:], "--strict"]) == 0
    assert "warning" not in capsys.readouterr().out
