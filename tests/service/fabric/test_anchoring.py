"""The service anchoring to three channels of the real network, through failures of every part."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_event_pb2

from receipt_service._client_cli import main as client_main
from receipt_service.config import load_settings
from receipt_service.fabric.gateway import GatewayClient
from receipt_service.fabric.network import CHANNELS, Network
from receipt_service.stores.sqlite import SQLiteStore
from receipt_verifier import AnchorPolicy, AnchorStatus, Verifier
from receipt_verifier.chain import replay
from receipt_verifier.fabric.trust import load_trust, make_trust
from receipt_verifier.fabric.windows import read_windows, tip_reads
from receipt_verifier.history import NOT_PROVEN, verify_history
from receipt_verifier.ledger import iter_ledger, parse_ledger_line, verify_chain

from ...fabric_forge import Forger
from ...fabric_tampering import _endorsed_by, _record, action_change, kv_change, tx_change
from ..instances import instances, one_redis, wait_for_leader
from ..parties import Party
from ..procs import collect, create_key, ledger_public_key, load, server, spread_load
from .conftest import service_config

WINDOW = 0.2
TARGETS = {f"fabric:{ch}" for ch in CHANNELS}


SERVICE_LOG: list[str] = []  # what the last service logged (shown when a test fails)


def _serve(net: Network, data_dir: Path) -> Any:
    cfg = service_config(net, data_dir.parent, anchor_retry_max_seconds=1.0)
    SERVICE_LOG.clear()
    return server(data_dir, WINDOW, "--config", str(cfg), lines=SERVICE_LOG)


async def _collect(base: str, token: str, ids: list[str], timeout: float) -> dict[str, Any]:
    """Every receipt anchored; when some are not, the failure shows what the service logged last."""
    try:
        return await collect(base, token, ids, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the service's last lines:\n{''.join(SERVICE_LOG[-60:])}") from None


async def _get(base: str, token: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http,
        http.get(path) as resp,
    ):
        return resp.status, await (resp.json() if "json" in resp.content_type else resp.text())


async def _wait_aggregated(base: str, token: str, ids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    """Receipts once every one has its tree (Fabric targets may still be pending)."""
    deadline = time.monotonic() + timeout
    while True:
        docs = []
        for i in range(0, len(ids), 250):
            status, body = await _get(base, token, "/proofs?ids=" + ",".join(ids[i : i + 250]))
            assert status == 200, body
            docs += body["receipts"]
        if all(d["state"] != "pending" for d in docs) or time.monotonic() > deadline:
            assert all(d["state"] != "pending" for d in docs), "windows did not close"
            return docs


async def _check_on_chain(
    gateway: GatewayClient, acked: dict[str, str], receipts: dict[str, Any], net: Network | None = None
) -> int:
    """Every receipt anchored on all three channels; each anchor read back equals the Merkle recomputation;
    with ``net``, every channel's chains replay from its blocks with no gap and no fork (the monitor).
    Answers the most windows one transaction appended (0 without ``net``)."""
    verifier_anchors: dict[tuple[str, str], set[tuple[str, int, str]]] = defaultdict(set)
    for proof_id, hash_hex in acked.items():
        doc = receipts[proof_id]
        result = Verifier([]).verify_policy(json.dumps(doc), AnchorPolicy.parse("0"), record_hash=hash_hex)
        fabric = [a for a in _anchors(doc) if a["type"] == "fabric"]
        assert sorted(a["channel"] for a in fabric) == sorted(CHANNELS), proof_id
        assert any(a["type"] == "local" for a in _anchors(doc))
        assert result.root is not None
        for a in fabric:
            verifier_anchors[(a["channel"], a["key"])].add((a["tx_id"], a["block_number"], result.root))
    newest: dict[str, int] = defaultdict(int)  # per channel, the newest block an anchor is in
    for (channel, key), seen in verifier_anchors.items():
        newest[channel] = max([newest[channel], *(block for _, block, _ in seen)])
        assert len(seen) == 1, f"receipts of one tree disagree on {channel}/{key}: {seen}"
        tx_id, block, root = seen.pop()
        record = json.loads(await gateway.evaluate(channel, "anchor", "GetAnchor", [key]))
        assert record["root"] == root and record["tx_id"] == tx_id, (channel, key, record)
        assert await gateway.commit_status(channel, tx_id) == (0, block)
        assert "chain_seq" in record, "every window is chained"
    most = 0
    if net is not None:
        trust = load_trust(make_trust(net.config_blocks().values()))
        evidence: dict[tuple[str, int], bytes] = {}
        for channel in CHANNELS:
            blocks = [await gateway.fetch_block(channel, n) for n in range(newest[channel] + 1)]
            evidence.update({(channel, n): b for n, b in enumerate(blocks)})
            found = read_windows(blocks, trust[channel])
            report = replay(found.windows)
            assert not found.problems and report.ok, (channel, found.problems, report.to_dict())
            assert found.windows, channel
            per_tx: dict[str | None, int] = defaultdict(int)
            for w in found.windows:
                per_tx[w.tx_id] += 1
            most = max(most, *per_tx.values())
        offline = Verifier([], fabric_trust=trust)  # each receipt with its blocks, as an auditor checks it
        for proof_id, hash_hex in acked.items():
            result = offline.verify(json.dumps(receipts[proof_id]), record_hash=hash_hex, blocks=evidence)
            fabric = [a for a in result.anchors if a.type == "fabric"]
            assert len(fabric) == 3 and all(a.status is AnchorStatus.VERIFIED for a in fabric), fabric
    return most


def _anchors(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    def walk(branch: dict[str, Any]) -> Iterable[dict[str, Any]]:
        for op in branch.get("ops", []):
            yield from op.get("anchors", [])
        for child in branch.get("branches", []):
            yield from walk(child)

    for b in doc["branches"]:
        yield from walk(b)


async def test_hashes_posted_over_http_are_anchored_on_all_three_channels(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with _serve(net, data) as (proc, base):
        assert await load(base, token, acked, stop_after=1.5, workers=2, max_batch=10) > 0
        receipts = await _collect(base, token, list(acked), timeout=60)
        status, ready = await _get(base, token, "/readyz")
        assert status == 200 and all(ready["checks"][t] == "ok" for t in TARGETS), ready
        status, metrics = await _get(base, token, "/metrics")
        for t in TARGETS:
            assert f'receipt_anchor_seconds_count{{target="{t}"}}' in metrics, t
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    await _check_on_chain(gateway, acked, receipts, net)


async def test_each_domain_is_anchored_on_its_own_channel_only(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    homes = {"owner-app": "personal-health", "provider": "medical-history", "insurer": "insurance"}
    tokens = {role: create_key(data, role, tenant=role) for role in homes}
    with _serve(net, data) as (proc, base):
        for role, domain in homes.items():
            acked: dict[str, str] = {}
            assert await load(base, tokens[role], acked, stop_after=0.5, workers=1, max_batch=5) > 0
            receipts = await collect(base, tokens[role], list(acked), timeout=60)
            roots: dict[str, str] = {}
            for proof_id, hash_hex in acked.items():
                doc = receipts[proof_id]
                assert doc["domain"] == domain and doc["@context"].endswith("/v2")
                fabric = [a for a in _anchors(doc) if a["type"] == "fabric"]
                assert [a["channel"] for a in fabric] == [domain], (role, fabric)
                result = Verifier([]).verify_policy(json.dumps(doc), AnchorPolicy.parse("0"), record_hash=hash_hex)
                assert result.root is not None
                roots[fabric[0]["key"]] = result.root
            for key, root in roots.items():
                record = json.loads(await gateway.evaluate(domain, "anchor", "GetAnchor", [key]))
                assert record["root"] == root
                for other in set(homes.values()) - {domain}:  # never written to another domain's channel
                    with pytest.raises(Exception, match="is not anchored"):
                        await gateway.evaluate(other, "anchor", "GetAnchor", [key])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


async def test_a_history_bundle_verifies_with_the_fabric_trust_file_alone(
    net: Network, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    app, clinic = create_key(data, "owner-app", tenant="wearco"), create_key(data, "provider", tenant="clinic")
    subject = "did:example:patient-fabric-01"
    with _serve(net, data) as (proc, base):

        async def call(token: str, method: str, path: str, body: Any = None) -> Any:
            async with (
                aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"}) as http,
                http.request(method, path, json=body) as resp,
            ):
                assert resp.status < 300, await resp.text()
                return await resp.json()

        await call(app, "POST", "/signing-keys", {"jwk": Party().jwk, "subject": subject})
        ack = await call(
            clinic, "POST", "/hashes", {"hashes": [os.urandom(32).hex() for _ in range(3)], "subject": subject}
        )
        for item in ack["hashes"]:
            receipt = await call(clinic, "GET", f"/proofs/{item['proof_id']}?wait=anchored&timeout=60")
            assert receipt["state"] == "anchored"
        bundle = await call(app, "GET", f"/subjects/{subject}/history?domain=medical-history")
        # the lane's next window: a bundle of the same window fetched after it carries its successor
        more = await call(clinic, "POST", "/hashes", {"hashes": [os.urandom(32).hex()], "subject": subject})
        done = await call(clinic, "GET", f"/proofs/{more['hashes'][0]['proof_id']}?wait=anchored&timeout=60")
        assert done["state"] == "anchored"
        later = await call(app, "GET", f"/subjects/{subject}/history?domain=medical-history&as_of={bundle['as_of']}")
        await _client_waits_for_the_commit(net, tmp_path, base, app, subject, call, clinic, capsys)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    trust = load_trust(make_trust(net.config_blocks().values()))
    _check_commit_proof(net, bundle, later, trust, load_settings(tmp_path / "service.toml", environ={}))
    report, records = verify_history(bundle, {}, fabric_trust=trust)  # no ledger key: Fabric alone
    assert report.complete and len(records) == 3, report.problems
    assert report.anchor is not None and "Fabric medical-history" in report.anchor
    assert report.append_only.startswith("no append-only guarantee: chained only in another lane"), report.append_only
    fabric = load_settings(tmp_path / "service.toml", environ={}).fabric
    assert fabric is not None
    lane = f"{fabric.chain_prefix}.medical-history"  # this deployment's lane: the insurer pins it
    report, _ = verify_history(bundle, {}, fabric_trust=trust, lane=lane)
    assert report.append_only.startswith("checked by both organisations' peers"), report.append_only
    assert "(chained: window " in report.anchor and f" of lane {lane} on medical-history)" in report.anchor
    assert "next" in bundle["head_proof"]["member"]  # the indexed heads tree (spec 14.5)
    forged = json.loads(json.dumps(bundle))
    forged["window"]["heads_root"] = "00" * 32
    with pytest.raises(Exception, match="wrote other heads"):
        verify_history(forged, {}, fabric_trust=trust)
    # a window that ends after the transaction that anchored it (forged with both orgs' keys): refused
    late = json.loads(json.dumps(bundle))
    anchor = next(a for a in late["window"]["anchors"] if a["type"] == "fabric")
    item = next(
        b for b in late["fabric_blocks"] if (b["channel"], b["number"]) == (anchor["channel"], anchor["block_number"])
    )
    end = "2099-01-01T00:00:00.000000Z"
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    change = tx_change(action_change(_window_end_everywhere(end)))  # the tree's record, the tip, the event
    item["block"] = base64.b64encode(change(block, Forger.of_network(net), anchor)).decode()
    late["window"]["window_end"] = end
    with pytest.raises(Exception, match="after its transaction"):
        verify_history(late, {}, fabric_trust=trust)
    # the tree's record alone changed: it contradicts the window's chain record
    torn = json.loads(json.dumps(late))
    item = next(
        b for b in torn["fabric_blocks"] if (b["channel"], b["number"]) == (anchor["channel"], anchor["block_number"])
    )
    original = next(
        b for b in bundle["fabric_blocks"] if (b["channel"], b["number"]) == (item["channel"], item["number"])
    )
    block = common_pb2.Block.FromString(base64.b64decode(original["block"]))
    change = tx_change(action_change(kv_change(_record(window_end=end))))
    item["block"] = base64.b64encode(change(block, Forger.of_network(net), anchor)).decode()
    with pytest.raises(Exception, match=r"the chain record of \S+ window says window_end"):
        verify_history(torn, {}, fabric_trust=trust)


async def _client_waits_for_the_commit(
    net: Network, tmp_path: Path, base: str, app: str, subject: str, call: Any, clinic: str, capsys: Any
) -> None:
    """``receipt-client history --wait-committed``: it fetches the lane's tip, which nothing proves committed
    yet, and fetches that window again until the lane's next window does; the bundle it writes then passes
    ``--require-committed``. The clinic keeps the lane moving meanwhile."""
    trust_file, key_file, out = tmp_path / "trust.json", tmp_path / "app-key", tmp_path / "committed.json"
    trust_file.write_text(json.dumps(make_trust(net.config_blocks().values())))
    key_file.write_text(app)
    fabric = load_settings(tmp_path / "service.toml", environ={}).fabric
    assert fabric is not None
    lane = f"{fabric.chain_prefix}.medical-history"
    argv = ["history", subject, "--domain", "medical-history", "-o", str(out), "--server", base]
    argv += ["--key-file", str(key_file), "--wait-committed", "90", "--trust", str(trust_file), "--lane", lane]
    cli = asyncio.create_task(asyncio.to_thread(client_main, [*argv, "--poll", "0.5"]))
    said = ""
    while not cli.done():
        said += capsys.readouterr().err
        if "waiting for the lane's next window" in said:  # it has the tip; from now on each window proves the last
            more = await call(clinic, "POST", "/hashes", {"hashes": [os.urandom(32).hex()], "subject": subject})
            await call(clinic, "GET", f"/proofs/{more['hashes'][0]['proof_id']}?wait=anchored&timeout=60")
        await asyncio.wait([cli], timeout=0.5)
    assert await cli == 0
    assert "waiting for the lane's next window" in said + capsys.readouterr().err  # it did wait
    doc: dict[str, Any] = json.loads(out.read_text())
    report, _ = verify_history(
        doc, {}, fabric_trust=load_trust(trust_file.read_bytes()), lane=lane, require_committed=True
    )
    assert report.complete and report.committed is not None and "committed, read as the lane's tip" in report.committed


def _check_commit_proof(net: Network, bundle: Any, later: Any, trust: Any, settings: Any) -> None:
    """Spec §14.9: a successor in the bundle proves its window committed (the peer's validation flags are
    signed by nobody). One organisation's keys cannot make one, nor can a successor of another window."""
    assert settings.fabric is not None
    lane = f"{settings.fabric.chain_prefix}.medical-history"
    assert later["window"] == bundle["window"] and later["log"] == bundle["log"]
    report, _ = verify_history(bundle, {}, fabric_trust=trust, lane=lane)
    assert report.complete and report.committed is not None and report.committed.endswith(NOT_PROVEN)
    report, _ = verify_history(bundle, {}, fabric_trust=trust, lane=lane, require_committed=True)
    assert [p for p in report.problems if "is not proven by a successor" in p], report.problems
    report, _ = verify_history(later, {}, fabric_trust=trust, lane=lane, require_committed=True)
    assert report.complete, report.problems
    assert report.committed is not None and "committed, read as the lane's tip by window" in report.committed
    anchor = next(a for a in later["window"]["anchors"] if a["type"] == "fabric")
    item = next(b for b in later["fabric_blocks"] if b not in bundle["fabric_blocks"])  # the successor's block
    original = base64.b64decode(item["block"])
    mine = next(
        base64.b64decode(b["block"])
        for b in later["fabric_blocks"]
        if (b["channel"], b["number"]) == (anchor["channel"], anchor["block_number"])
    )
    at = (anchor["block_number"], next(r.index for r in tip_reads(mine) if r.tx_id == anchor["tx_id"]))
    successor = next(r for r in tip_reads(original) if r.read == at)
    forger = Forger.of_network(net)

    def read_elsewhere(rw: Any, kv: Any) -> None:
        for r in kv.reads:
            if r.key.startswith("\x00tip\x00"):
                r.version.tx_num += 1  # it read another transaction's write as the tip

    cases = {
        "endorsed by Hospitals alone": (tx_change(_endorsed_by("Hospitals")), False),
        "read another transaction's write (both organisations endorse it)": (
            tx_change(action_change(kv_change(read_elsewhere))),
            False,
        ),
        "endorsed again by both organisations (the control: the forger's blocks are well formed)": (
            tx_change(action_change(lambda action: None)),
            True,
        ),
    }
    for name, (change, proven) in cases.items():
        forged = json.loads(json.dumps(later))
        spot = next(
            b for b in forged["fabric_blocks"] if (b["channel"], b["number"]) == (item["channel"], item["number"])
        )
        block = common_pb2.Block.FromString(original)
        spot["block"] = base64.b64encode(change(block, forger, {"tx_id": successor.tx_id})).decode()
        report, _ = verify_history(forged, {}, fabric_trust=trust, lane=lane, require_committed=True)
        assert report.complete is proven, (name, report.problems)
        assert report.committed is not None and report.committed.endswith(NOT_PROVEN) is not proven, name
    without = json.loads(json.dumps(later))
    without["fabric_blocks"] = [b for b in without["fabric_blocks"] if b != item]
    report, _ = verify_history(without, {}, fabric_trust=trust, lane=lane)
    assert report.committed is not None and report.committed.endswith(NOT_PROVEN)


def _window_end_everywhere(end: str) -> Any:
    """Set ``window_end`` in every record a chained window's transaction writes or emits."""

    def edit(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["window_end"] = end
        return json.dumps(doc, separators=(",", ":")).encode()

    def on_action(action: Any) -> None:
        kv_change(lambda rw, kv: [setattr(w, "value", edit(w.value)) for w in kv.writes if b"window_end" in w.value])(
            action
        )
        if action.events:
            event = chaincode_event_pb2.ChaincodeEvent.FromString(action.events)
            event.payload = b"\n".join(edit(line) for line in event.payload.split(b"\n"))
            action.events = event.SerializeToString()

    return on_action


async def test_one_orderer_down_anchoring_goes_on(net: Network, gateway: GatewayClient, tmp_path: Path) -> None:
    assert net.stop("orderer0")
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with _serve(net, data) as (_, base):
        await load(base, token, acked, stop_after=1.5, workers=2, max_batch=10)
        receipts = await _collect(base, token, list(acked), timeout=60)
    await _check_on_chain(gateway, acked, receipts, net)


async def test_the_leader_killed_under_load_anchoring_goes_on(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """SmartBFT: kill -9 the orderer that leads the most channels while hashes stream in; the other
    three elect another leader by a view change, every anchor completes, the killed one catches up."""
    leaders = net.status().leaders
    assert set(leaders) == set(CHANNELS)
    victim = max(set(leaders.values()), key=list(leaders.values()).count)
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with _serve(net, data) as (_, base):
        task = asyncio.create_task(load(base, token, acked, stop_after=3.0, workers=2, max_batch=10))
        await asyncio.sleep(1.0)
        assert net.stop(victim, signal.SIGKILL)
        assert await task > 0
        receipts = await _collect(base, token, list(acked), timeout=120)
    after = net.status().leaders
    assert all(who != victim for who in after.values()), after  # each channel moved to another leader
    await asyncio.to_thread(net.up)  # the killed orderer restarts and catches up
    await _check_on_chain(gateway, acked, receipts, net)


async def test_one_orderer_killed_and_restarted_under_load(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """A follower killed with -9 mid-load and started again while the load goes on."""
    leaders = set(net.status().leaders.values())
    victim = next(o.name for o in net.layout.orderers if o.name not in leaders)
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with _serve(net, data) as (_, base):
        task = asyncio.create_task(load(base, token, acked, stop_after=4.0, workers=2, max_batch=10))
        await asyncio.sleep(1.0)
        assert net.stop(victim, signal.SIGKILL)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(net.start, victim)
        assert await task > 0
        receipts = await _collect(base, token, list(acked), timeout=120)
    await _check_on_chain(gateway, acked, receipts, net)


async def test_two_of_four_orderers_down_anchors_pending_then_complete(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """Two consenters of four down: no quorum (3), so nothing is ordered and anchors stay pending; once
    one of them is back, three make a quorum and every anchor completes."""
    down = [o.name for o in net.layout.orderers[:2]]
    await _outage(net, gateway, tmp_path, down, signal.SIGKILL, back=down[:1])


async def _outage(
    net: Network, gateway: GatewayClient, tmp_path: Path, stop: list[str], sig: int, back: list[str] | None = None
) -> None:
    """Stop nodes; ingest goes on and Fabric anchors stay pending; restart them (or only ``back``);
    every anchor completes."""
    for name in stop:
        assert net.stop(name, sig)
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    with _serve(net, data) as (_, base):
        assert await load(base, token, acked, stop_after=1.0, workers=2, max_batch=10) > 0, "ingest must go on"
        docs = await _wait_aggregated(base, token, list(acked))
        await asyncio.sleep(1.0)
        docs = await _wait_aggregated(base, token, list(acked))
        for doc in docs:
            assert doc["state"] == "aggregated"
            assert {p["target"] for p in doc["pending_anchors"]} == TARGETS
            assert [a["type"] for a in _anchors(doc)] == ["local"]
        status, ready = await _get(base, token, "/readyz")
        assert status == 503
        assert all(ready["checks"][t] != "ok" for t in TARGETS), ready
        if back is None:
            await asyncio.to_thread(net.up)
        else:
            for name in back:
                await asyncio.to_thread(net.start, name)
        receipts = await _collect(base, token, list(acked), timeout=120)
        status, ready = await _get(base, token, "/readyz")
        assert status == 200, ready
    most = await _check_on_chain(gateway, acked, receipts, net)
    assert most > 1, "the backlog of windows went one per transaction (AppendWindows takes several)"


async def test_all_orderers_down_anchors_pending_then_complete(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    await _outage(net, gateway, tmp_path, [o.name for o in net.layout.orderers], signal.SIGTERM)


async def test_chaincode_server_killed_anchors_pending_then_complete(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    await _outage(net, gateway, tmp_path, ["chaincode"], signal.SIGKILL)


async def test_kill_9_of_the_service_with_anchors_in_flight(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    rng = random.Random(os.urandom(8))

    # 1: the orderers are down, so every Fabric anchor job is open when the service dies
    for o in net.layout.orderers:
        net.stop(o.name)
    with _serve(net, data) as (proc, base):
        await load(base, token, acked, stop_after=0.8, workers=2, max_batch=50)
        await _wait_aggregated(base, token, list(acked))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    await asyncio.to_thread(net.up)

    # 2: kills at random moments under load, while roots are being endorsed, ordered and committed
    for _ in range(3):
        with _serve(net, data) as (proc, base):
            task = asyncio.create_task(load(base, token, acked, stop_after=30, workers=2, max_batch=50))
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            proc.send_signal(signal.SIGKILL)
            await task
            assert proc.wait(timeout=30) == -signal.SIGKILL

    with _serve(net, data) as (proc, base):
        receipts = await collect(base, token, list(acked), timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    await _check_on_chain(gateway, acked, receipts, net)

    entries = list(iter_ledger((data / "ledger.jsonl").read_bytes().splitlines()))
    trees = {(e.entry.window_id, e.entry.tree_index): e.entry.tree_size for e in entries}
    assert len(trees) == len(entries), "a tree was anchored twice on the local ledger"
    store = SQLiteStore(data)
    try:
        stats = await store.stats()
    finally:
        store.close_sync()
    assert sum(trees.values()) == stats.submissions >= len(acked)
    assert stats.pending_anchors == 0 and stats.backlog == 0
    for (window_id, index), size in trees.items():  # every tree, even one of unacknowledged hashes, on every channel
        for channel in CHANNELS:
            record = json.loads(await gateway.evaluate(channel, "anchor", "GetAnchor", [f"{window_id}/{index}"]))
            assert record["tree_size"] == size


async def test_two_instances_on_redis_carry_the_chains_over_a_kill_9_of_the_leader(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """Two service processes on one Redis, the lane chained on the three channels. The leader is killed
    with SIGKILL under load while its windows' anchors are open; the other takes the lead, resumes those
    anchors and moves each chain on from where the dead leader left it. Every acknowledged hash is then
    anchored on every channel, each channel's chains replay with no gap and no fork, and the shared local
    ledger verifies as one chain."""
    cfg = service_config(net, tmp_path, anchor_retry_max_seconds=1.0)
    acked: dict[str, str] = {}
    with (
        one_redis(tmp_path) as (redis_server, client, token),
        instances(tmp_path, redis_server.url, 2, "--config", str(cfg)) as inst,
    ):
        old = await asyncio.to_thread(wait_for_leader, inst, client)
        stop = asyncio.Event()
        task = asyncio.create_task(spread_load(inst.bases, token, acked, stop))
        await asyncio.sleep(2.0)
        deadline = time.monotonic() + 30
        while not int(client.zcard("{hr:v1}:open")):  # kill it with anchors on their way to Fabric
            assert time.monotonic() < deadline, "no anchor was ever open"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(inst.kill, old)
        before = len(acked)
        new = await asyncio.to_thread(wait_for_leader, inst, client, old)
        await asyncio.sleep(3.0)
        stop.set()
        await task
        assert len(acked) > before > 0, "the load did not go on through the takeover"
        try:
            receipts = await collect(inst.bases[new], token, list(acked), timeout=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the new leader's last lines:\n{''.join(inst.logs[new][-60:])}") from None
        assert int(client.hget("{hr:v1}:meta", "fence") or 0) >= 2, "the lead did not change hands"
        assert "this instance leads now" in "".join(inst.logs[new])  # it took over, not led from the start
        lines = client.lrange("{hr:ledger}:lines", 0, -1)
    verify_chain([parse_ledger_line(line, n) for n, line in enumerate(lines, 1)], ledger_public_key(tmp_path / "i0"))
    await _check_on_chain(gateway, acked, receipts, net)


async def test_an_idle_lane_gets_empty_windows_and_the_next_window_follows_them(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """Silence is visible: an idle lane's chain moves on with empty windows, and a window of hashes
    after them starts where the last one ended (spec section 14.7)."""
    data = tmp_path / "data"
    token = create_key(data)
    cfg = service_config(net, tmp_path, anchor_retry_max_seconds=1.0, empty_window_seconds=1.0)
    fabric = load_settings(cfg, environ={}).fabric
    assert fabric is not None and fabric.chain_prefix
    lane, channel = f"{fabric.chain_prefix}._", "insurance"

    async def tip() -> dict[str, Any]:
        return dict(json.loads(await gateway.evaluate(channel, "anchor", "GetTip", [lane])))

    acked: dict[str, str] = {}
    with server(data, WINDOW, "--config", str(cfg)) as (proc, base):
        assert await load(base, token, acked, stop_after=0.3, workers=1, max_batch=5) > 0
        await collect(base, token, list(acked), timeout=60)
        first = await tip()
        assert first["trees"], "the first window of a chain holds hashes"
        deadline = time.monotonic() + 60
        while (idle := await tip())["seq"] < first["seq"] + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert idle["seq"] >= first["seq"] + 2 and idle["trees"] == [], idle
        assert idle["heads_root"] == first["heads_root"], "an empty window changes no head"
        more: dict[str, str] = {}
        assert await load(base, token, more, stop_after=0.3, workers=1, max_batch=5) > 0
        await collect(base, token, list(more), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    last = await tip()
    assert last["trees"] and last["seq"] > idle["seq"]
    window = json.loads(await gateway.evaluate(channel, "anchor", "GetAnchor", [f"{last['window_id']}/0"]))
    assert window["chain_seq"] == last["seq"] and last["window_start"] >= idle["window_end"]
