"""The chain monitor (``receipt-verify chain``) over a real channel's blocks: a lane of windows written
through the network, two successors of one tip endorsed at once (one is committed MVCC-invalid: it is
listed and left out of the chain), every block of the channel fetched and replayed offline under a
trust file made from the config blocks. Then forged copies of the tip's block, re-signed with the
network's own keys so that the chain checks are reached, are each refused with their reason."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from receipt_service.fabric.evidence import BlockCache
from receipt_service.fabric.gateway import GatewayClient
from receipt_service.fabric.network import Network
from receipt_service.stores.sqlite import SQLiteStore
from receipt_verifier._cli import EXIT_INVALID, EXIT_VALID, main
from receipt_verifier.chain import TIP_NO_SUCCESSOR
from receipt_verifier.fabric.trust import load_trust, make_trust
from receipt_verifier.fabric.windows import find_successor, read_windows, tip_reads
from receipt_verifier.model import FabricAnchor
from tests.fabric_forge import Forger, prp_with_value

from .chainlane import ChainLane, forge_transition, heads_of, records

CHANNEL = "medical-history"
A, B, C, D = "did:example:alice-0001", "did:example:bob-0002", "did:example:carol-0003", "did:example:dan-0004"


@dataclass
class Written:
    """What the test wrote: the lane, the tip window's tx and block, the logs before it, the loser."""

    lane: ChainLane
    tip_tx: str
    tip_block: int
    before_tip: dict[str, list[bytes]]
    loser_tx: str
    loser_block: int
    blocks: dict[int, bytes]
    trust: Path


async def _append(gateway: GatewayClient, lane: ChainLane, grow: dict[str, list[bytes]], trees: int = 1) -> Any:
    logs = lane.grown(grow)
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(logs, trees=trees))
    lane.accept(done.result, logs)
    return done


async def _two_successors(gateway: GatewayClient, lane: ChainLane) -> tuple[str, int, str, int]:
    """Endorse two successors of the tip, then submit one after the other: the first commits, the second
    is committed MVCC_READ_CONFLICT (the tip key it read has a new version). (winner tx, block, loser tx, block)."""
    first, second = lane.grown({A: records(1)}), lane.grown({B: records(1)})
    endorsed = [
        await gateway.endorse(CHANNEL, "anchor", "AppendWindow", lane.args(first)),
        await gateway.endorse(CHANNEL, "anchor", "AppendWindow", lane.args(second)),
    ]
    statuses = []
    for tx_id, envelope, _ in endorsed:
        envelope.signature = gateway.identity.sign(envelope.payload)
        await gateway._call(
            "Submit",
            gateway_pb2.SubmitRequest(transaction_id=tx_id, channel_id=CHANNEL, prepared_transaction=envelope),
        )
        statuses.append(await gateway.commit_status(CHANNEL, tx_id))
    codes = [transaction_pb2.TxValidationCode.Name(code) for code, _ in statuses]
    assert codes == ["VALID", "MVCC_READ_CONFLICT"], codes
    lane.accept(endorsed[0][2], first)
    return endorsed[0][0], statuses[0][1], endorsed[1][0], statuses[1][1]


@pytest.fixture
async def written(net: Network, gateway: GatewayClient, tmp_path: Path) -> Written:
    lane = ChainLane()
    await _append(gateway, lane, {A: records(2), B: records(1)})  # seq 0
    await _append(gateway, lane, {A: records(1), C: records(2)}, trees=2)  # seq 1
    await _append(gateway, lane, {}, trees=0)  # seq 2: an empty window
    _, _, loser_tx, loser_block = await _two_successors(gateway, lane)  # seq 3, and its MVCC-invalid twin
    before = {s: list(e) for s, e in lane.logs.items()}
    done = await _append(gateway, lane, {A: records(1), D: records(1)})  # seq 4: the tip
    blocks = {n: await gateway.fetch_block(CHANNEL, n) for n in range(done.block_number + 1)}
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(make_trust(net.config_blocks().values())))
    return Written(lane, done.tx_id, done.block_number, before, loser_tx, loser_block, blocks, trust)


def _write_blocks(folder: Path, blocks: dict[int, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, data in blocks.items():
        (folder / f"{CHANNEL}_{n}.block").write_bytes(data)
    return folder


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["chain", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_the_monitor_replays_a_lane_and_lists_the_losing_successor(
    written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lane = written.lane
    folder = _write_blocks(tmp_path / "blocks", written.blocks)
    report, page = tmp_path / "chain.json", tmp_path / "chain.html"
    code, out = _run(
        capsys,
        "--trust",
        str(written.trust),
        str(folder),
        "--lane",
        lane.name,
        "--json",
        str(report),
        "--html",
        str(page),
    )
    assert code == EXIT_VALID, out
    doc = json.loads(report.read_text())
    assert doc["ok"] and doc["channel"] == CHANNEL and doc["block_problems"] == [], doc["block_problems"]
    assert doc["first_block"] == 0 and doc["last_block"] == written.tip_block
    (only,) = doc["lanes"]
    assert only["lane"] == lane.name and only["ok"] and only["windows_checked"] == 5 and only["first_seq"] == 0
    assert only["tip"]["seq"] == 4 and only["tip"]["tx_id"] == written.tip_tx
    assert only["tip"]["status"] == TIP_NO_SUCCESSOR
    assert only["tip"]["window_end"] == json.loads(lane.tip or b"")["window_end"]
    assert [w["status"].split(" ")[0] for w in only["windows"]] == ["committed"] * 4 + ["tip"]
    assert [w["inserted"] for w in only["windows"]] == [2, 1, 0, 0, 1]
    (loser,) = doc["left_out"]
    assert (loser["tx_id"], loser["code"], loser["block"]) == (
        written.loser_tx,
        "MVCC_READ_CONFLICT",
        written.loser_block,
    )
    assert loser["seq"] == "3" and loser["endorsed"].startswith("endorsed by "), loser
    assert lane.name in out and "ok; tip (no successor yet" in out and "MVCC_READ_CONFLICT" in out
    text = page.read_text()
    assert "<script" not in text and lane.name in text and "MVCC_READ_CONFLICT" in text
    # the whole channel, every lane (block files given one by one, in any order)
    files = sorted((str(p) for p in folder.iterdir()), reverse=True)
    code, out = _run(capsys, "--trust", str(written.trust), *files, "--json", str(report))
    mine = [x for x in json.loads(report.read_text())["lanes"] if x["lane"] == lane.name]
    assert len(mine) == 1 and mine[0]["ok"] and mine[0]["windows_checked"] == 5, out


async def test_a_successor_proves_which_of_two_endorsed_competitors_committed(written: Written) -> None:
    """Spec §14.9, as a history bundle uses it: the loser of two endorsed successors of one tip has no
    successor, even with its validation flag rewritten to VALID by whoever exported its block (nobody signs
    the flags); the winner has one (the tip), and the tip none yet."""
    trust = load_trust(written.trust.read_bytes())[CHANNEL]
    lane = written.lane.name

    def successor(tx_id: str, block: int, given: dict[int, bytes], tip: bytes | None = None) -> Any:
        mine = next(r for r in tip_reads(given[block]) if r.tx_id == tx_id)
        assert mine.tip is not None
        blocks = [given[n] for n in sorted(given)]
        return find_successor(blocks, trust, lane, (block, mine.index), tip or mine.tip)

    windows = read_windows([written.blocks[n] for n in sorted(written.blocks)], trust, lane=lane).windows
    (winner,) = [w for w in windows if w.seq == 3]
    assert winner.tx_id is not None and winner.position is not None and winner.tx_id != written.loser_tx
    found = successor(winner.tx_id, winner.position[0], written.blocks)
    assert found is not None and (found.seq, found.tx_id) == (4, written.tip_tx)
    assert successor(written.tip_tx, written.tip_block, written.blocks) is None
    assert successor(written.loser_tx, written.loser_block, written.blocks) is None
    block = common_pb2.Block.FromString(written.blocks[written.loser_block])
    (loser,) = [r for r in tip_reads(written.blocks[written.loser_block]) if r.tx_id == written.loser_tx]
    flags = bytearray(block.metadata.metadata[common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER])
    assert flags[loser.index] == transaction_pb2.TxValidationCode.MVCC_READ_CONFLICT
    flags[loser.index] = transaction_pb2.TxValidationCode.VALID
    block.metadata.metadata[common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER] = bytes(flags)
    forged = {**written.blocks, written.loser_block: block.SerializeToString()}
    offered = read_windows([forged[n] for n in sorted(forged)], trust, lane=lane)
    assert [w.seq for w in offered.windows if w.tx_id == written.loser_tx] == [3]  # now offered as a window
    assert successor(written.loser_tx, written.loser_block, forged) is None
    assert successor(winner.tx_id, winner.position[0], forged) == found
    # the winner's place with the loser's record: the successor's prev names the winner's record, not this
    assert successor(winner.tx_id, winner.position[0], forged, tip=loser.tip) is None
    assert loser.tip is not None and not loser.valid


def _tamper(
    written: Written,
    forger: Forger,
    gateway: GatewayClient,
    edit_args: Callable[[list[bytes]], None],
    edit_writes: Callable[[str, dict[str, Any]], None],
) -> bytes:
    """The tip's block with the tip transaction's arguments and writes edited, the proposal hash and
    endorsements made again by both organisations' peers, the envelope signed again by the writer and
    the block sealed again by an orderer."""
    block = common_pb2.Block.FromString(written.blocks[written.tip_block])
    pos, _, payload, tx, cap = forger.tx(block, written.tip_tx)
    cpp = proposal_pb2.ChaincodeProposalPayload.FromString(cap.chaincode_proposal_payload)
    cis = chaincode_pb2.ChaincodeInvocationSpec.FromString(cpp.input)
    args = [bytes(a) for a in cis.chaincode_spec.input.args]
    edit_args(args)
    del cis.chaincode_spec.input.args[:]
    cis.chaincode_spec.input.args.extend(args)
    cpp.input = cis.SerializeToString()
    cap.chaincode_proposal_payload = cpp.SerializeToString()

    def change(action: Any) -> None:
        rw = rwset_pb2.TxReadWriteSet.FromString(action.results)
        for ns in rw.ns_rwset:
            kv = kv_rwset_pb2.KVRWSet.FromString(ns.rwset)
            for w in kv.writes:
                if w.value.startswith(b"{"):
                    doc = json.loads(w.value)
                    edit_writes(w.key, doc)
                    w.value = json.dumps(doc, separators=(",", ":")).encode()
            ns.rwset = kv.SerializeToString()
        action.results = rw.SerializeToString()

    prp = proposal_response_pb2.ProposalResponsePayload.FromString(prp_with_value(cap, change))
    prp.proposal_hash = hashlib.sha256(
        bytes(payload.header.channel_header) + bytes(payload.header.signature_header) + cap.chaincode_proposal_payload
    ).digest()
    forger.endorse(cap, ["Hospitals", "Insurers"], prp.SerializeToString())
    forger.put_tx(block, pos, payload, tx, cap, signer=gateway.identity)
    return forger.reseal(block)


def _forged_prev(written: Written) -> tuple[Callable[[list[bytes]], None], Callable[[str, dict[str, Any]], None]]:
    def args(a: list[bytes]) -> None:
        a[3] = b"ab" * 32  # [fn, lane, seq, prev, ...]

    def writes(key: str, doc: dict[str, Any]) -> None:
        if key.startswith("\x00tip\x00"):
            doc["prev"] = "ab" * 32

    return args, writes


def _forged_drop(written: Written) -> tuple[Callable[[list[bytes]], None], Callable[[str, dict[str, Any]], None]]:
    """The tip window's heads replaced by the heads before it with A's newest record dropped."""
    shrunk = {s: list(e) for s, e in written.before_tip.items()}
    shrunk[A] = shrunk[A][:-1]
    old, new = heads_of(written.before_tip), heads_of(shrunk)
    proof = json.dumps(forge_transition(old, new))

    def args(a: list[bytes]) -> None:
        a[8], a[9], a[10] = new.root.hex().encode(), str(new.size).encode(), proof.encode()

    def writes(key: str, doc: dict[str, Any]) -> None:
        doc["heads_root"] = new.root.hex()
        if key.startswith("\x00tip\x00"):
            doc["heads_size"] = new.size
            doc["proof_hash"] = hashlib.sha256(proof.encode()).hexdigest()
        else:
            doc["heads_size"] = new.size

    return args, writes


def _forged_deep_trees(written: Written) -> tuple[Callable[[list[bytes]], None], Callable[[str, dict[str, Any]], None]]:
    """A trees argument nested deeper than a JSON parser recurses (found by a review: a traceback)."""

    def args(a: list[bytes]) -> None:
        a[7] = b"[" * 5000

    return args, lambda key, doc: None


@pytest.mark.parametrize(
    ("case", "check", "reason"),
    [
        (_forged_prev, "previous hash", "prev abababab"),
        (_forged_drop, "transition", "shrank from"),
        (_forged_deep_trees, "evidence", "the trees argument is not a JSON list"),
    ],
    ids=["tip record whose prev does not match", "transition proof that drops a record", "trees nested too deep"],
)
async def test_a_forged_tip_is_named(
    written: Written,
    net: Network,
    gateway: GatewayClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: Any,
    check: str,
    reason: str,
) -> None:
    forger = Forger.of_network(net)
    edit_args, edit_writes = case(written)
    blocks = dict(written.blocks)
    blocks[written.tip_block] = _tamper(written, forger, gateway, edit_args, edit_writes)
    folder = _write_blocks(tmp_path / "forged", blocks)
    report = tmp_path / "forged.json"
    code, out = _run(
        capsys, "--trust", str(written.trust), str(folder), "--lane", written.lane.name, "--json", str(report)
    )
    assert code == EXIT_INVALID, out
    doc = json.loads(report.read_text())
    assert doc["block_problems"] == [], "the forged block verifies as a block: the chain checks are reached"
    (lane,) = doc["lanes"]
    bad = lane["first_bad"]
    assert bad is not None and bad["check"] == check and bad["seq"] == 4, bad
    assert reason in bad["reason"], bad["reason"]
    assert lane["windows_checked"] == 4 and lane["tip"]["seq"] == 3
    assert f"BAD at seq 4 ({CHANNEL} block {written.tip_block} tx" in out


async def test_a_config_update_midway_is_followed_either_way_it_is_pinned(
    net: Network, gateway: GatewayClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pinning the genesis block, the newer config block verifies under it and the later blocks under it;
    pinning the newest config block, the blocks before it hold by the header chain back from it. A block
    left out breaks the block chain and the lane."""
    lane = ChainLane()
    await _append(gateway, lane, {A: records(1)})
    await _append(gateway, lane, {B: records(2)})
    net.set_batch_timeout(CHANNEL, "260ms")
    third = await _append(gateway, lane, {A: records(1)})
    done = await _append(gateway, lane, {C: records(1)})
    blocks = {n: await gateway.fetch_block(CHANNEL, n) for n in range(done.block_number + 1)}
    folder = _write_blocks(tmp_path / "blocks", blocks)
    genesis, newest = tmp_path / "genesis.json", tmp_path / "newest.json"
    genesis.write_text(json.dumps(make_trust([blocks[0]])))
    newest.write_text(json.dumps(make_trust([net.config_blocks()[CHANNEL]])))
    report = tmp_path / "r.json"
    pins = []
    for trust in (genesis, newest):
        code, out = _run(capsys, "--trust", str(trust), str(folder), "--lane", lane.name, "--json", str(report))
        doc = json.loads(report.read_text())
        assert code == EXIT_VALID and doc["block_problems"] == [], out
        assert doc["lanes"][0]["windows_checked"] == 4 and doc["lanes"][0]["tip"]["tx_id"] == done.tx_id
        pins.append(doc["trust"]["config_block"])
    assert pins[0] == 0 and pins[1] > 0, pins
    (folder / f"{CHANNEL}_{third.block_number}.block").unlink()  # the block of the window at seq 2
    code, out = _run(capsys, "--trust", str(genesis), str(folder), "--lane", lane.name, "--json", str(report))
    doc = json.loads(report.read_text())
    assert code == EXIT_INVALID and f"does not follow block {third.block_number - 1}" in out, out
    bad = doc["lanes"][0]["first_bad"]
    assert (bad["check"], bad["seq"], doc["lanes"][0]["windows_checked"]) == ("sequence", 3, 2), bad


async def test_the_service_finds_the_committed_successor_not_one_endorsed_by_one_organisation(
    net: Network, gateway: GatewayClient, tmp_path: Path
) -> None:
    """A history bundle's successor block (spec §14.9), as the service looks for it on the real channel: a
    successor endorsed by Hospitals alone is ordered first and flagged ENDORSEMENT_POLICY_FAILURE; the scan
    skips it (found by a review: it took it, and the window stayed unproven) and finds the committed one,
    which the verifier accepts where it refuses the other. A window without a successor yet is scanned
    again from where the last scan stopped."""
    lane = ChainLane()
    first = await _append(gateway, lane, {A: records(2)})
    logs = lane.grown({B: records(1)})
    args = lane.args(logs)
    tx_id, envelope, _ = await gateway.endorse(CHANNEL, "anchor", "AppendWindow", args, ["HospitalsMSP"])
    envelope.signature = gateway.identity.sign(envelope.payload)
    await gateway._call(
        "Submit", gateway_pb2.SubmitRequest(transaction_id=tx_id, channel_id=CHANNEL, prepared_transaction=envelope)
    )
    code, alone_block = await gateway.commit_status(CHANNEL, tx_id)
    assert transaction_pb2.TxValidationCode.Name(code) == "ENDORSEMENT_POLICY_FAILURE"
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", args)
    lane.accept(done.result, logs)
    assert done.block_number > alone_block > first.block_number
    store = SQLiteStore(tmp_path / "store")
    cache = BlockCache(store, gateway, [CHANNEL])
    try:
        anchor = FabricAnchor("a", CHANNEL, first.tx_id, first.block_number, "", "anchor")  # the scan needs no key
        assert await cache.successor(anchor) == done.block_number
        trust = load_trust(json.dumps(make_trust(net.config_blocks().values())))[CHANNEL]
        blocks = {n: await gateway.fetch_block(CHANNEL, n) for n in range(done.block_number + 1)}
        mine = next(r for r in tip_reads(blocks[first.block_number]) if r.tx_id == first.tx_id)
        assert mine.tip is not None
        at = (first.block_number, mine.index)

        def successor(upto: int) -> Any:
            return find_successor([blocks[n] for n in range(upto + 1)], trust, lane.name, at, mine.tip or b"")

        assert successor(alone_block) is None  # endorsed by one organisation: proves nothing
        found = successor(done.block_number)
        assert found is not None and found.tx_id == done.tx_id and found.seq == 1
        tip = FabricAnchor("b", CHANNEL, done.tx_id, done.block_number, "", "anchor")
        assert await cache.successor(tip) is None  # the lane's tip: no successor yet
        assert cache._scanned[done.tx_id] == done.block_number + 1  # the next scan starts past the height
        later = await _append(gateway, lane, {A: records(1)})
        assert await cache.successor(tip) == later.block_number
    finally:
        await store.close()
