"""Fabric evidence: bundles from the service verify offline against a pinned trust file, and a corpus
of tampered blocks, transactions and trust files over real blocks each fails with its own error."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fabric_protos.common import common_pb2, configtx_pb2, configuration_pb2
from fabric_protos.msp import identities_pb2

from receipt_service.fabric.gateway import GatewayError
from receipt_service.fabric.network import Network
from receipt_verifier import Verifier
from receipt_verifier.errors import TrustFileError
from receipt_verifier.fabric.trust import load_trust, make_trust
from receipt_verifier.ledger import load_public_key
from receipt_verifier.verify import AnchorStatus
from tests.fabric_forge import Forger, Signer
from tests.fabric_tampering import BFT_CASES, CASES, Facts, bft_expected, expected, fabric_anchor, flip

from ..procs import collect, create_key, load, server
from .conftest import _free_base, service_config

RECORDS = {
    "visit-2026-03-02.json": b'{"resourceType":"Encounter","status":"finished","subject":"p-7f3a"}',
    "lab-hba1c.json": b'{"resourceType":"Observation","code":"4548-4","value":"5.4%"}',
    "claim-C-1107.pdf": b"%PDF-1.4 claim C-2025-1107, 180 EUR",
}


@dataclass
class Evidence:
    bundles: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]  # record name -> its bundle
    trust: dict[str, Any]
    ledger_key: bytes
    hashes: dict[str, str]
    raw_blocks: dict[tuple[str, int], bytes]
    statuses: dict[str, int]
    net: Network


async def _fetch(
    base: str, token: str, ids: list[str]
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], bytes], dict[str, int], bytes]:
    """Bundles for ``ids``, the raw blocks of the first, the statuses of bad requests, the ledger key."""
    headers = {"Authorization": f"Bearer {token}"}
    bundles, raw, statuses = [], {}, {}
    async with aiohttp.ClientSession(base, headers=headers) as http:
        hashes = [hashlib.sha256(r).hexdigest() for r in RECORDS.values()]
        async with http.post("/hashes", json={"hashes": hashes}) as resp:
            ids = [item["proof_id"] for item in (await resp.json())["hashes"]] + ids
        for pid in ids[: len(RECORDS)]:
            async with http.get(f"/proofs/{pid}", params={"wait": "anchored", "timeout": "30"}) as resp:
                assert (await resp.json())["state"] == "anchored"
        for pid in ids:
            async with http.get(f"/proofs/{pid}", params={"evidence": "embed"}) as resp:
                assert resp.status == 200, await resp.text()
                bundles.append(await resp.json())
        for item in bundles[0]["fabric_blocks"]:
            async with http.get(f"/fabric/{item['channel']}/blocks/{item['number']}") as resp:
                assert resp.content_type == "application/octet-stream"
                raw[(item["channel"], item["number"])] = await resp.read()
        for name, path in {
            "unknown channel": "/fabric/research/blocks/1",
            "future block": "/fabric/insurance/blocks/999999",
            "bad number": "/fabric/insurance/blocks/-1",
            "bad evidence": f"/proofs/{ids[0]}?evidence=all",
        }.items():
            async with http.get(path) as resp:
                statuses[name] = resp.status
                assert resp.content_type == "application/problem+json"
        async with http.get("/ledger/key") as resp:
            key = await resp.read()
    return bundles, raw, statuses, key


@pytest.fixture(scope="module")
def evidence(fabric_net: Network, tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    if any(fabric_net.pid(n) is None for n in fabric_net.layout.nodes):
        fabric_net.up()
    data = tmp_path_factory.mktemp("evidence") / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with server(data, 0.2, "--config", str(service_config(fabric_net, data.parent))) as (_, base):
        asyncio.run(load(base, token, acked, stop_after=0.5, workers=1, max_batch=5))
        asyncio.run(collect(base, token, list(acked), timeout=60))
        ids = list(acked)[:3]
        bundles, raw, statuses, key = asyncio.run(_fetch(base, token, ids))
    trust = make_trust(fabric_net.config_blocks().values())
    records = dict(zip(RECORDS, bundles[: len(RECORDS)], strict=True))
    return Evidence(bundles[len(RECORDS) :], records, trust, key, acked, raw, statuses, fabric_net)


def _verifier(ev: Evidence, trust: dict[str, Any] | None = None) -> Verifier:
    return Verifier([load_public_key(ev.ledger_key)], fabric_trust=load_trust(trust or ev.trust))


def test_a_bundle_verifies_every_anchor_offline(evidence: Evidence, tmp_path: Path) -> None:
    verifier = _verifier(evidence)
    for bundle in evidence.bundles:
        proof_id = bundle["receipt"]["proof_id"]
        result = verifier.verify(json.dumps(bundle), record_hash=evidence.hashes[proof_id])
        statuses = {(a.type, a.status) for a in result.anchors}
        assert statuses == {("fabric", AnchorStatus.VERIFIED), ("local", AnchorStatus.VERIFIED)}, result.anchors
        fabric = [a for a in result.anchors if a.type == "fabric"]
        assert len(fabric) == 3
        for a in fabric:  # a quorum of SmartBFT consenters, each of its own organisation, signed the block
            signers = a.reason.split("signed by ", 1)[1].split(";", 1)[0].split(", ")
            assert len({s.split(":")[0] for s in signers}) >= 3 and "InsurersMSP" in a.reason, a.reason

    (tmp_path / "bundle.json").write_text(json.dumps(evidence.bundles[0]))
    (tmp_path / "trust.json").write_text(json.dumps(evidence.trust))
    (tmp_path / "key.json").write_bytes(evidence.ledger_key)
    cli = [sys.executable, "-m", "receipt_verifier._cli", str(tmp_path / "bundle.json")]
    out = subprocess.run(
        [*cli, "--trust", str(tmp_path / "trust.json"), "--ledger-key", str(tmp_path / "key.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fabric:ok, fabric:ok, fabric:ok, local:ok" in out.stdout


def test_the_service_serves_raw_blocks_and_names_bad_requests(evidence: Evidence) -> None:
    for item in next(iter(evidence.records.values()))["fabric_blocks"]:
        assert evidence.raw_blocks[(item["channel"], item["number"])] == base64.b64decode(item["block"])
    s = evidence.statuses
    assert (s["unknown channel"], s["future block"], s["bad number"], s["bad evidence"]) == (404, 404, 422, 422)


def test_without_evidence_or_trust_fabric_anchors_are_not_verified(evidence: Evidence) -> None:
    bundle = evidence.bundles[0]
    result = _verifier(evidence).verify(json.dumps(bundle["receipt"]))
    fabric = [a for a in result.anchors if a.type == "fabric"]
    assert all(a.status is AnchorStatus.NOT_VERIFIED and "no evidence" in a.reason for a in fabric)
    result = Verifier([load_public_key(evidence.ledger_key)]).verify(json.dumps(bundle))
    fabric = [a for a in result.anchors if a.type == "fabric"]
    assert all(a.status is AnchorStatus.NOT_VERIFIED and "no trust file" in a.reason for a in fabric)


# ---------------------------------------------------------------------- the tamper corpus


def _insurance(bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the insurance anchor, its block item) of a bundle."""
    return fabric_anchor(bundle, "insurance")


@pytest.mark.parametrize("name", list(CASES))
def test_tampered_block_fails_with_its_own_error(evidence: Evidence, name: str) -> None:
    """The shared corpus (tests/fabric_tampering/) over a live block, re-signed with the network's keys."""
    case, template = CASES[name]
    bundle = copy.deepcopy(evidence.bundles[0])
    anchor, item = _insurance(bundle)
    forger = Forger.of_network(evidence.net)
    facts = Facts.of(common_pb2.Block.FromString(base64.b64decode(item["block"])), anchor, forger)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(case(block, forger, anchor)).decode()
    error = template.split(":", 1)[0]
    reason = _expect(evidence, bundle, error)
    assert reason == expected(template, facts, "insurance")


@pytest.mark.parametrize("name", list(BFT_CASES))
def test_bft_quorum_of_a_live_block(evidence: Evidence, name: str) -> None:
    """SmartBFT's block validation over a live block re-signed with the consenters' keys: a quorum of
    distinct consenters of the pinned mapping (tests/fabric_tampering/bft.py BFT_CASES)."""
    case, template = BFT_CASES[name]
    bundle = copy.deepcopy(evidence.bundles[0])
    anchor, item = _insurance(bundle)
    forger = Forger.of_network(evidence.net)
    assert forger.bft and forger.quorum == 3
    facts = Facts.of(common_pb2.Block.FromString(base64.b64decode(item["block"])), anchor, forger)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(case(block, forger, anchor)).decode()
    want = bft_expected(template, facts)
    result = _verifier(evidence).verify(json.dumps(bundle))
    insurance = next(a for a in result.anchors if a.anchor_id.startswith("insurance:"))
    if want.startswith("block "):
        assert insurance.status is AnchorStatus.VERIFIED and insurance.reason == want
    else:
        assert insurance.status is AnchorStatus.FAILED and insurance.reason == want


def _expect(evidence: Evidence, bundle: dict[str, Any], error: str, trust: dict[str, Any] | None = None) -> str:
    """The failed insurance anchor's reason; ``error`` is the class it must name."""
    result = _verifier(evidence, trust).verify(json.dumps(bundle))
    insurance = next(a for a in result.anchors if a.anchor_id.startswith("insurance:"))
    assert insurance.status is AnchorStatus.FAILED, insurance
    assert insurance.reason.startswith(error + ":"), insurance.reason
    others = [a for a in result.anchors if a is not insurance]
    assert all(a.status is AnchorStatus.VERIFIED for a in others), "tampering one anchor must not touch the others"
    return insurance.reason


def test_a_block_of_another_channel_is_refused(evidence: Evidence) -> None:
    bundle = copy.deepcopy(evidence.bundles[0])
    _anchor, item = _insurance(bundle)
    other = next(b for b in bundle["fabric_blocks"] if b["channel"] == "personal-health" and b["number"] > 0)
    item["block"] = other["block"]
    _expect(evidence, bundle, "BlockFormatError")


def test_an_anchor_naming_an_unpinned_channel_or_another_key_is_refused(evidence: Evidence) -> None:
    bundle = copy.deepcopy(evidence.bundles[0])
    anchor, item = _insurance(bundle)
    anchor["key"] = anchor["key"].rsplit("/", 1)[0] + "/7"
    _expect(evidence, bundle, "WriteSetError")
    bundle = copy.deepcopy(evidence.bundles[0])
    anchor, item = _insurance(bundle)
    anchor["channel"] = item["channel"] = "research"
    result = _verifier(evidence).verify(json.dumps(bundle))
    research = next(a for a in result.anchors if a.status is not AnchorStatus.VERIFIED)
    assert research.reason.startswith("ChannelMismatchError:"), research.reason


def test_a_block_of_another_network_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    other = Network(tmp_path / "other", _free_base(evidence.net.layout.base_port + 100))
    try:
        other.up()
        from receipt_service.config import load_settings
        from receipt_service.server import fabric_client

        fabric = load_settings(other.layout.root / "receipt-service.toml", environ={}).fabric
        assert fabric is not None

        async def anchor_one() -> bytes:
            client = fabric_client(fabric)
            args = ["x/0", "a" * 64, "1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]
            try:
                for attempt in range(40):  # discovery may lag a moment behind on a busy machine
                    try:
                        done = await client.submit("insurance", "anchor", "AnchorRoot", args)
                        break
                    except GatewayError as exc:
                        if exc.code != "FAILED_PRECONDITION" or attempt == 39:
                            raise
                        await asyncio.sleep(0.5)
                return await client.fetch_block("insurance", done.block_number)
            finally:
                await client.close()

        foreign = asyncio.run(anchor_one())
    finally:
        other.down()
    bundle = copy.deepcopy(evidence.bundles[0])
    _anchor, item = _insurance(bundle)
    item["block"] = base64.b64encode(foreign).decode()
    _expect(evidence, bundle, "OrdererSignatureError")


@pytest.mark.parametrize("where", ["config_block", "root_certs", "config_block_hash", "endorsement_policy"])
def test_a_changed_trust_file_is_refused(evidence: Evidence, where: str) -> None:
    trust = copy.deepcopy(evidence.trust)
    entry = trust["channels"]["insurance"]
    if where == "config_block":
        raw = base64.b64decode(entry["config_block"])
        entry["config_block"] = base64.b64encode(flip(raw, len(raw) // 3)).decode()
    elif where == "root_certs":
        pem = entry["root_certs"]["InsurersMSP"][0]
        entry["root_certs"]["InsurersMSP"][0] = pem[:100] + ("A" if pem[100] != "A" else "B") + pem[101:]
    elif where == "config_block_hash":
        entry["config_block_hash"] = "0" * 64
    else:
        entry["endorsement_policy"] = "OR('HospitalsMSP.peer', 'InsurersMSP.peer')"
    with pytest.raises(TrustFileError):
        load_trust(trust)


# ---------------------------------------------------------------------- the insurer's batch audit


def _audit(evidence: Evidence, folder: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    (tmp_path / "trust.json").write_text(json.dumps(evidence.trust))
    (tmp_path / "key.json").write_bytes(evidence.ledger_key)
    report = tmp_path / f"{folder.name}.json"
    cmd = [sys.executable, "-m", "receipt_verifier._cli", "audit", str(folder), "--trust", str(tmp_path / "trust.json")]
    cmd += [
        "--ledger-key",
        str(tmp_path / "key.json"),
        "--json",
        str(report),
        "--html",
        str(report.with_suffix(".html")),
    ]
    out = subprocess.run([*cmd, "--progress"], capture_output=True, text=True, check=False, timeout=120)
    return out, json.loads(report.read_text())


def test_batch_audit_of_a_treatment_history(evidence: Evidence, tmp_path: Path) -> None:
    clean = tmp_path / "history"
    clean.mkdir()
    for name, data in RECORDS.items():
        (clean / name).write_bytes(data)
        (clean / f"{name}.receipt.json").write_text(json.dumps(evidence.records[name]))
    out, report = _audit(evidence, clean, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert report["summary"]["valid"] == 3 and report["summary"]["invalid"] == 0
    assert report["summary"]["verified_anchors"] == {
        "insurance": 3,
        "local": 3,
        "medical-history": 3,
        "personal-health": 3,
    }
    assert "auditing [" in out.stderr  # the progress bar

    dirty = tmp_path / "tampered"
    dirty.mkdir()
    names = list(RECORDS)
    (dirty / names[0]).write_bytes(RECORDS[names[0]])
    (dirty / f"{names[0]}.receipt.json").write_text(json.dumps(evidence.records[names[0]]))
    (dirty / names[1]).write_bytes(RECORDS[names[1]] + b" ")  # the record was changed after it was stamped
    (dirty / f"{names[1]}.receipt.json").write_text(json.dumps(evidence.records[names[1]]))
    (dirty / "claim-C-1107.sha256").write_text(hashlib.sha256(RECORDS[names[2]]).hexdigest() + "\n")
    bundle = copy.deepcopy(evidence.records[names[2]])
    _, item = _insurance(bundle)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(
        CASES["a byte of the first envelope"][0](block, Forger.of_network(evidence.net), {})
    ).decode()
    (dirty / "claim-C-1107.receipt.json").write_text(json.dumps(bundle))
    (dirty / "visit-2026-04-11.json").write_bytes(b'{"resourceType":"Encounter"}')  # no receipt at all
    out, report = _audit(evidence, dirty, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    by_name = {r["record"]: r for r in report["items"]}
    assert by_name[names[0]]["valid"] and by_name[names[0]]["record_check"] == "record hashed"
    assert by_name[names[1]]["error"] == "HashMismatchError"
    claim = by_name["claim-C-1107"]
    assert not claim["valid"] and claim["record_check"] == "hash given"
    failed = [a for a in claim["anchors"] if a["status"] == "failed"]
    assert [a["details"]["channel"] for a in failed] == ["insurance"] and failed[0]["reason"].startswith(
        "DataHashError"
    )
    assert by_name["visit-2026-04-11.json"]["record_check"] == "no receipt"
    assert "visit-2026-04-11.json" in out.stdout and "DataHashError" in out.stdout

    shot = tmp_path / "report.png"
    page = (tmp_path / "tampered.html").resolve()
    dom = _chromium(["--dump-dom", page.as_uri()])
    for text in ("Receipt audit", "INVALID", "claim-C-1107", "DataHashError", "no receipt", "Fabric insurance, block"):
        assert text in dom, text
    _chromium([f"--screenshot={shot}", "--window-size=1280,900", page.as_uri()])
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _chromium(args: list[str]) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is required for the HTML report test (./run test installs it)"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    out = subprocess.run([exe, *flags, *args], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


PROBE = """
import json, sys
events = []
sys.addaudithook(lambda e, a: events.append(e) if e.startswith("socket.") else None)
from receipt_verifier._cli import main
rc = main([{bundle!r}, "--trust", {trust!r}, "--ledger-key", {key!r}, "--json"])
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "grpc", "receipt_service", "socket"))
sys.stdout = sys.__stdout__
print("PROBE" + json.dumps({{"rc": rc, "events": events, "mods": mods}}))
"""


def test_fabric_verification_opens_no_socket_and_loads_no_grpc(evidence: Evidence, tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text(json.dumps(evidence.bundles[0]))
    (tmp_path / "trust.json").write_text(json.dumps(evidence.trust))
    (tmp_path / "key.json").write_bytes(evidence.ledger_key)
    code = PROBE.format(
        bundle=str(tmp_path / "bundle.json"), trust=str(tmp_path / "trust.json"), key=str(tmp_path / "key.json")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    probe = json.loads(out[out.index("PROBE") + 5 :])
    assert probe["rc"] == 0
    assert probe["events"] == []
    assert [m for m in probe["mods"] if m != "socket"] == []


def test_an_anchor_made_under_a_newer_config_verifies_through_that_config(evidence: Evidence, tmp_path: Path) -> None:
    net = evidence.net
    net.set_batch_timeout("personal-health", "300ms")
    data = tmp_path / "data"
    token = create_key(data)
    with server(data, 0.2, "--config", str(service_config(net, tmp_path))) as (_, base):
        bundle = asyncio.run(_stamp(base, token, hashlib.sha256(b"after the config update").hexdigest()))
    anchor = next(
        a
        for op in bundle["receipt"]["branches"][0]["ops"]
        for a in op.get("anchors", [])
        if a.get("channel") == "personal-health"
    )
    config_items = [
        b
        for b in bundle["fabric_blocks"]
        if b["channel"] == "personal-health" and b["number"] != anchor["block_number"]
    ]
    assert [b["number"] for b in config_items] != [0], "the anchor's block should name the updated config block"
    config_number = config_items[0]["number"]

    result = _verifier(evidence).verify(json.dumps(bundle))  # the trust file still pins the genesis block
    fabric = [a for a in result.anchors if a.type == "fabric"]
    assert len(fabric) == 3 and all(a.status is AnchorStatus.VERIFIED for a in fabric), fabric
    ph = next(a for a in result.anchors if a.anchor_id.startswith("personal-health:"))
    assert f"under config block {config_number}, verified under the pinned one" in ph.reason

    def personal_health(b: dict[str, Any]) -> Any:
        return next(
            a for a in _verifier(evidence).verify(json.dumps(b)).anchors if a.anchor_id.startswith("personal-health:")
        )

    missing = copy.deepcopy(bundle)
    missing["fabric_blocks"] = [
        b for b in missing["fabric_blocks"] if b["number"] != config_number or b["channel"] != "personal-health"
    ]
    got = personal_health(missing)
    assert (
        got.status is AnchorStatus.FAILED
        and got.reason.startswith("ConfigMismatchError:")
        and "does not include" in got.reason
    )

    for how in ("flipped", "signed by an unpinned orderer", "its consenters replaced, signed by the new ones"):
        forged = copy.deepcopy(bundle)
        item = next(
            b for b in forged["fabric_blocks"] if b["channel"] == "personal-health" and b["number"] == config_number
        )
        raw = base64.b64decode(item["block"])
        if how == "flipped":
            raw = flip(raw, len(raw) // 2)
        else:
            rogue = Forger.of_network(evidence.net)
            rogue.orderers = [
                Signer.rogue(f"{o}MSP", f"orderer9.{o.lower()}") for o in evidence.net.layout.orderer_orgs
            ]
            block = common_pb2.Block.FromString(raw)
            if how.startswith("its consenters"):  # a consenter set nobody pinned, in a config block it signs itself
                _replace_consenters(block, rogue.orderers)
            raw = rogue.reseal(block)
        item["block"] = base64.b64encode(raw).decode()
        got = personal_health(forged)
        assert got.status is AnchorStatus.FAILED and got.reason.startswith("ConfigMismatchError:"), (how, got.reason)


def _replace_consenters(block: Any, signers: list[Signer]) -> None:
    """Put these signers' certificates in the config block's consenter mapping."""
    env = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(env.payload)
    cfg = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    value = cfg.config.channel_group.groups["Orderer"].values["Orderers"]
    mapping = configuration_pb2.Orderers.FromString(value.value)
    assert len(mapping.consenter_mapping) == len(signers)
    for consenter, signer in zip(mapping.consenter_mapping, signers, strict=True):
        consenter.identity = identities_pb2.SerializedIdentity.FromString(signer.serialized).id_bytes
    value.value = mapping.SerializeToString()
    payload.data = cfg.SerializeToString()
    env.payload = payload.SerializeToString()
    block.data.data[0] = env.SerializeToString()


async def _stamp(base: str, token: str, hash_hex: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post("/hashes", json={"hashes": [hash_hex]}) as resp:
            pid = (await resp.json())["hashes"][0]["proof_id"]
        async with http.get(f"/proofs/{pid}", params={"wait": "anchored", "timeout": "30"}) as resp:
            assert (await resp.json())["state"] == "anchored"
        async with http.get(f"/proofs/{pid}", params={"evidence": "embed"}) as resp:
            doc: dict[str, Any] = await resp.json()
            return doc
