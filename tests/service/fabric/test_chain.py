"""Chained windows through the real network: the chaincode, run by both organisations' peers at
endorsement, refuses every window that would rewrite a subject's history (spec section 14.8).

Each attack is played with the keys its attacker holds: the service's own identity (the operator),
another user or the admin of either organisation. Each must fail with its own reason and leave the
lane's tip where it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fabric_protos.common import common_pb2, policies_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import msp_principal_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2, transaction_pb2

from receipt_service.fabric.gateway import Endpoint, GatewayClient, GatewayError, TransactionInvalidError
from receipt_service.fabric.identity import Identity
from receipt_service.fabric.network import CHAINCODE, CHAINCODE_VERSION, Network, NetworkError
from receipt_service.transition import transition_nodes
from receipt_verifier.chain import COMMITTED, TIP_NO_SUCCESSOR, replay
from receipt_verifier.fabric.trust import load_trust, make_trust
from receipt_verifier.fabric.windows import read_windows
from receipt_verifier.heads import subject_key

from .chainlane import ChainLane, heads_of, now, records

CHANNEL = "medical-history"
A, B, C = "did:example:alice-0001", "did:example:bob-0002", "did:example:carol-0003"


def client_as(net: Network, org: str, user: str) -> GatewayClient:
    """A Gateway client signing as ``user`` of ``org`` (Admin, User1, User2)."""
    lay = net.layout
    msp = lay.user_dir(org, user) / "msp"
    identity = Identity.from_files(
        f"{org}MSP", next((msp / "signcerts").glob("*.pem")), next((msp / "keystore").iterdir())
    )
    return GatewayClient(identity, [Endpoint.from_files(lay.address(p), lay.tls_ca(p.org)) for p in lay.peers])


@pytest.fixture
async def lane(gateway: GatewayClient) -> AsyncIterator[ChainLane]:
    """A lane with two windows committed: A has 3 records, B 1, C 2 (C came in the second window)."""
    lane = ChainLane()
    for grow in ({A: records(2), B: records(1)}, {A: records(1), C: records(2)}):
        logs = lane.grown(grow)
        done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(logs))
        lane.accept(done.result, logs)
    yield lane


async def _tip(gateway: GatewayClient, lane: ChainLane) -> bytes:
    return await gateway.evaluate(CHANNEL, "anchor", "GetTip", [lane.name])


async def test_a_lane_chains_windows_that_only_grow(net: Network, gateway: GatewayClient, lane: ChainLane) -> None:
    assert await _tip(gateway, lane) == lane.tip, "the tip answered is the record the window wrote"
    tip = json.loads(lane.tip or b"")
    assert (tip["seq"], tip["lane"], tip["heads_size"]) == (1, lane.name, 4)  # the sentinel and three subjects
    logs = lane.grown({B: records(2)})
    args = lane.args(logs, trees=3)
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", args)
    record = json.loads(done.result)
    assert record["seq"] == 2 and record["tx_id"] == done.tx_id and len(record["trees"]) == 3
    for i in range(3):  # each tree's key is written once, in the same transaction, with its chain position
        anchor = json.loads(await gateway.evaluate(CHANNEL, "anchor", "GetAnchor", [f"{args[3]}/{i}"]))
        assert (anchor["tx_id"], anchor["chain_seq"], anchor["lane"]) == (done.tx_id, 2, lane.name)
    again = await gateway.submit(CHANNEL, "anchor", "AppendWindow", args)  # a retry after a lost answer
    assert json.loads(again.result)["tx_id"] == done.tx_id, "a repeat of the tip's window answers the tip"
    # the monitor lists the committed retry (it wrote nothing) and still checks the whole lane
    trust = load_trust(make_trust(net.config_blocks().values()))[CHANNEL]
    blocks = [await gateway.fetch_block(CHANNEL, n) for n in range(again.block_number + 1)]
    found = read_windows(blocks, trust, lane=lane.name)
    report = replay(found.windows)
    assert report.ok and [w.seq for w in found.windows] == [0, 1, 2], report.to_dict()
    assert [t.tx_id for t in found.left_out] == [again.tx_id] and "retry" in found.left_out[0].note


def _tip_policies(blocks: list[bytes], lane: str) -> list[tuple[str, list[str]]]:
    """Each transaction's key-level policy writes on ``lane``'s tip: (tx id, the policy's peer MSPs)."""
    key = f"\x00tip\x00{lane}\x00"
    found: list[tuple[str, list[str]]] = []
    for raw in blocks:
        for env_raw in common_pb2.Block.FromString(raw).data.data:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(env_raw).payload)
            ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
            if ch.type != common_pb2.ENDORSER_TRANSACTION:
                continue
            tx = transaction_pb2.Transaction.FromString(payload.data)
            cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
            prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
            rw = rwset_pb2.TxReadWriteSet.FromString(proposal_pb2.ChaincodeAction.FromString(prp.extension).results)
            for ns in rw.ns_rwset:
                for mw in kv_rwset_pb2.KVRWSet.FromString(ns.rwset).metadata_writes:
                    if mw.key != key:
                        continue
                    for entry in mw.entries:
                        assert entry.name == "VALIDATION_PARAMETER", entry.name
                        env = policies_pb2.SignaturePolicyEnvelope.FromString(entry.value)
                        roles = [msp_principal_pb2.MSPRole.FromString(p.principal) for p in env.identities]
                        assert all(r.role == msp_principal_pb2.MSPRole.PEER for r in roles)
                        assert env.rule.n_out_of.n == len(env.identities)  # every one of them
                        found.append((ch.tx_id, sorted(r.msp_identifier for r in roles)))
    return found


async def test_the_tip_needs_both_organisations_whatever_the_definition_says(
    net: Network, gateway: GatewayClient, lane: ChainLane
) -> None:
    """The tip key carries a key-level policy of a peer of each organisation, so even a chaincode
    definition both organisations weakened later could not let one of them move a lane on alone. The
    lane's first window writes it; Fabric keeps it, and no later window writes it again (spec 14.8)."""
    logs = lane.grown({C: records(1)})
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(logs))
    lane.accept(done.result, logs)
    blocks = [await gateway.fetch_block(CHANNEL, n) for n in range(done.block_number + 1)]
    first = read_windows(blocks, load_trust(make_trust(net.config_blocks().values()))[CHANNEL], lane=lane.name)
    assert [w.seq for w in first.windows] == [0, 1, 2]
    assert _tip_policies(blocks, lane.name) == [(first.windows[0].tx_id, ["HospitalsMSP", "InsurersMSP"])]


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("drop A's newest record", "the log of key .* shrank"),
        ("replace B's record", "changed without growing"),
        ("rewrite A's first record and add one", "the consistency proof of key .* fails"),
        ("list the changed leaves out of order", "changed leaves repeat or are out of order"),
        ("claim A is new", "is not new"),
        ("skip a sequence number", "sequence"),
        ("name another previous record", "previous hash"),
        ("start after a gap", "gap in time"),
        ("end in the future", "ends in the future"),
        ("claim other heads", "the new heads root does not follow"),
    ],
)
async def test_the_operator_cannot_rewrite_a_history(
    gateway: GatewayClient, lane: ChainLane, attack: str, reason: str
) -> None:
    """The service's own identity (the operator's keys) tries to anchor a window that rewrites history."""
    logs = lane.grown({B: records(1), A: records(1)})
    edit = None
    over: dict[str, Any] = {}
    if attack == "drop A's newest record":
        logs = lane.grown({})
        logs[A] = logs[A][:-1]
    elif attack == "replace B's record":
        logs = lane.grown({})
        logs[B] = records(1)
    elif attack == "rewrite A's first record and add one":
        logs = lane.grown({})
        logs[A] = records(1) + logs[A][1:] + records(1)
    elif attack == "list the changed leaves out of order":

        def edit(proof: dict[str, Any]) -> None:
            proof["changed"].reverse()

    elif attack == "claim A is new":  # insert A again, with A's predecessor as its "low leaf"
        logs = lane.grown({})
        heads = heads_of(lane.logs)
        low = heads.low_index(subject_key(A))
        key, nxt, size, root = heads.leaf(low)
        over["heads_size"] = heads.size + 1

        def edit(proof: dict[str, Any]) -> None:
            proof["changed"] = [
                {"index": low, "key": key.hex(), "next": nxt.hex(), "size": size, "root": root.hex()}
                | {"new_size": size, "new_root": root.hex(), "consistency": []}
            ]
            proof["inserted"] = [{"key": subject_key(A).hex(), "low": low, "size": 1, "root": os.urandom(32).hex()}]
            proof["nodes"] = transition_nodes(heads, [low])
            proof["old_size"], proof["new_size"] = heads.size, heads.size + 1

    elif attack == "skip a sequence number":
        over["seq"] = lane.seq + 1
    elif attack == "name another previous record":
        over["prev"] = os.urandom(32).hex()
    elif attack == "start after a gap":
        over["start"] = now(-0.5)
    elif attack == "end in the future":
        over["end"] = now(60)
    elif attack == "claim other heads":
        over["heads_root"] = os.urandom(32).hex()
    args = lane.args(logs, edit=edit, **over)
    with pytest.raises(GatewayError, match=reason) as err:
        await gateway.submit(CHANNEL, "anchor", "AppendWindow", args)
    assert err.value.code == "ABORTED", f"{attack}: refused at endorsement, not later"
    assert await _tip(gateway, lane) == lane.tip, f"{attack}: the tip did not move"


async def test_a_backlog_goes_in_one_transaction_and_the_monitor_replays_it(
    net: Network, gateway: GatewayClient, lane: ChainLane
) -> None:
    """``AppendWindows``: three windows (the second empty) in one transaction, each checked as its own
    successor; the monitor replays them and a later window's read makes all three committed."""
    first = lane.grown({A: records(1)})
    third = lane.grown({B: records(2), "did:example:dan-0004": records(1)}, first)
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindows", lane.batch([first, first, third]))
    recs = [json.loads(x) for x in done.result.split(b"\n")]
    assert [r["seq"] for r in recs] == [2, 3, 4] and {r["tx_id"] for r in recs} == {done.tx_id}
    assert recs[1]["prev"] == hashlib.sha256(done.result.split(b"\n")[0]).hexdigest()
    assert await _tip(gateway, lane) == done.result.split(b"\n")[-1]
    lane.accept(done.result.split(b"\n")[-1], third)
    after = await gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(lane.grown({C: records(1)})))
    trust = load_trust(make_trust(net.config_blocks().values()))[CHANNEL]
    blocks = [await gateway.fetch_block(CHANNEL, n) for n in range(after.block_number + 1)]
    found = read_windows(blocks, trust, lane=lane.name)
    report = replay(found.windows).lanes[lane.name]
    assert report.ok, report.to_dict()
    assert [(w.seq, w.status, w.tx_id == done.tx_id) for w in report.windows[2:]] == [
        (2, COMMITTED, True),
        (3, COMMITTED, True),
        (4, COMMITTED, True),
        (5, TIP_NO_SUCCESSOR, False),
    ]
    assert (report.windows[4].updated, report.windows[4].inserted) == (1, 1)  # B grew, dan is new


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("drop A's newest record in the second window", "window 1 of the transaction: transition check"),
        ("skip a sequence number in the second window", "window 1 of the transaction: sequence"),
        ("name a previous record in the second window", "window 1 of the transaction: prev"),
    ],
)
async def test_a_backlog_that_rewrites_a_history_is_refused_whole(
    gateway: GatewayClient, lane: ChainLane, attack: str, reason: str
) -> None:
    first = lane.grown({A: records(1)})
    second = lane.grown({B: records(1)}, first)
    if attack.startswith("drop"):
        second[A] = second[A][:-1]
    args = lane.batch([first, second])
    if attack.startswith("skip"):
        args[1 + 9] = str(lane.seq + 2)
    elif attack.startswith("name"):
        args[1 + 9 + 1] = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(GatewayError, match=reason) as err:
        await gateway.submit(CHANNEL, "anchor", "AppendWindows", args)
    assert err.value.code == "ABORTED"
    assert await _tip(gateway, lane) == lane.tip, "nothing of the batch was written"


async def test_two_successors_of_one_tip_at_once_exactly_one_commits(gateway: GatewayClient, lane: ChainLane) -> None:
    first, second = lane.grown({A: records(1)}), lane.grown({B: records(1)})
    results = await asyncio.gather(
        gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(first)),
        gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args(second)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    loss = lost[0]
    assert isinstance(loss, GatewayError)
    if isinstance(loss, TransactionInvalidError):
        # both endorsed against the same tip: the first in the block commits; the second read a stale tip
        # (MVCC_READ_CONFLICT) or, in the same block, writes a key whose endorsement policy the first
        # one set again (Fabric then cannot know the policy it was endorsed under)
        assert "MVCC_READ_CONFLICT" in str(loss) or "ENDORSEMENT_POLICY_FAILURE" in str(loss), loss
    else:  # the winner committed before the loser was endorsed: the chaincode refused it
        assert "sequence" in str(loss) or "previous hash" in str(loss), loss
    assert await _tip(gateway, lane) == won[0].result


@pytest.mark.parametrize(
    ("org", "user"), [("Hospitals", "User2"), ("Hospitals", "Admin"), ("Insurers", "User1"), ("Insurers", "Admin")]
)
async def test_only_the_service_identity_writes(
    net: Network, gateway: GatewayClient, lane: ChainLane, org: str, user: str
) -> None:
    attacker = client_as(net, org, user)
    try:
        args = lane.args(lane.grown({A: records(1)}))
        with pytest.raises(GatewayError, match="only the anchoring service's identity may write"):
            await attacker.submit(CHANNEL, "anchor", "AppendWindow", args)
        with pytest.raises(GatewayError, match="only the anchoring service's identity may write"):
            await attacker.submit(CHANNEL, "anchor", "AnchorRoot", ["x/0", "a" * 64, "1", now(-1), now()])
    finally:
        await attacker.close()
    assert await _tip(gateway, lane) == lane.tip


async def test_one_organisation_alone_cannot_change_the_writer(net: Network, gateway: GatewayClient) -> None:
    service = net.writer_fingerprint()
    admin = client_as(net, "Hospitals", "Admin")
    user = client_as(net, "Insurers", "User1")
    try:
        rogue = os.urandom(32).hex()
        await admin.submit(CHANNEL, "anchor", "ApproveWriter", [rogue])  # Hospitals approves another writer
        approvals = json.loads(await gateway.evaluate(CHANNEL, "anchor", "GetWriter", []))["approvals"]
        assert approvals == {"HospitalsMSP": rogue, "InsurersMSP": service}
        with pytest.raises(GatewayError, match="no writer is approved"):  # the two disagree: nobody writes
            await gateway.submit(CHANNEL, "anchor", "AppendWindow", ChainLane().args({}))
        with pytest.raises(GatewayError, match="admin"):
            await user.submit(CHANNEL, "anchor", "ApproveWriter", [rogue])
    finally:
        await admin.submit(CHANNEL, "anchor", "ApproveWriter", [service])
        await admin.close()
        await user.close()
    lane = ChainLane()
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", lane.args({}))
    assert json.loads(done.result)["seq"] == 0


async def test_the_unchained_write_is_closed_once_a_channel_chains(gateway: GatewayClient, lane: ChainLane) -> None:
    with pytest.raises(GatewayError, match="windows on this channel are chained"):
        await gateway.submit(
            CHANNEL, "anchor", "AnchorRoot", [f"x-{os.urandom(4).hex()}/0", "a" * 64, "1", now(-1), now()]
        )


async def test_one_organisation_alone_cannot_append(gateway: GatewayClient, lane: ChainLane) -> None:
    for org in ("HospitalsMSP", "InsurersMSP"):
        args = lane.args(lane.grown({A: records(1)}))
        with pytest.raises(TransactionInvalidError, match="ENDORSEMENT_POLICY_FAILURE"):
            await gateway.submit(CHANNEL, "anchor", "AppendWindow", args, endorsing_orgs=[org])
    assert await _tip(gateway, lane) == lane.tip


def test_one_organisation_alone_cannot_redefine_the_chaincode(net: Network) -> None:
    """The attacker holds the Hospitals admin's keys. It approves a definition under which its own peer
    alone endorses (a weaker chaincode could then accept any window) and commits it: the lifecycle's
    endorsement policy, a majority of the two organisations, needs the Insurers too."""
    lay = net.layout
    pkg = json.loads(net.state_file.read_text())["package_id"]
    weak = ["--channelID", CHANNEL, "--name", CHAINCODE, "--version", CHAINCODE_VERSION, "--sequence", "2"]
    weak += ["--signature-policy", "OR('HospitalsMSP.peer')"]
    net.peer_cli(
        "Hospitals", ["lifecycle", "chaincode", "approveformyorg", *net.orderer_args(), *weak, "--package-id", pkg]
    )

    def commit(orgs: tuple[str, ...]) -> str:
        peers: list[str] = []
        for peer in (p for p in lay.peers if p.org in orgs):
            peers += ["--peerAddresses", lay.address(peer), "--tlsRootCertFiles", str(lay.tls_ca(peer.org))]
        with pytest.raises(NetworkError) as err:
            net.peer_cli("Hospitals", ["lifecycle", "chaincode", "commit", *net.orderer_args(), *weak, *peers])
        return str(err.value)

    assert "ENDORSEMENT_POLICY_FAILURE" in commit(("Hospitals",))  # its own peer's endorsement is not enough
    assert "chaincode definition not agreed to by this org (InsurersMSP)" in commit(("Hospitals", "Insurers"))
    committed = net.peer_cli("Insurers", ["lifecycle", "chaincode", "querycommitted", "-C", CHANNEL, "-n", CHAINCODE])
    assert "Sequence: 1," in committed and "Version: 1.0" in committed
