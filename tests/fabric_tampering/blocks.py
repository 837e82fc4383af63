"""Reading a tampered block's case: what the expected reasons are made of (read from the untampered
block, with no help from the verifier), the reasons rendered, and a case applied to a bundle."""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2

from tests.fabric_forge import Forger

BLOCK_POLICY = "ANY Writers of [OR('OrdererMSP.member')]"
ENDORSEMENT_POLICY = "AND('HospitalsMSP.peer', 'InsurersMSP.peer')"
FAKE_ROOT = "0f" * 32


def identity_name(serialized: bytes) -> str:
    """``MSP:CN`` of a serialized identity, read here with no help from the verifier."""
    sid = identities_pb2.SerializedIdentity.FromString(serialized)
    cert = x509.load_pem_x509_certificate(bytes(sid.id_bytes))
    return f"{sid.mspid}:{cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value}"


@dataclass
class Facts:
    """What the expected reasons are made of, read from the untampered block and the anchor."""

    n: int  # block number
    envelopes: int
    tx: str  # the first 16 characters of the anchor's tx id
    key: str
    root: str
    tree_size: int
    signers: list[str]  # the block's orderer signers
    client: str
    peers: dict[str, str]  # org -> peer name
    clients: dict[str, str]  # org -> client name
    orderers: list[str]  # the forger's orderers
    first_endorser: str  # the name on the transaction's first endorsement
    endorsers: list[str]  # the names on its endorsements, in order
    tx_time: str  # the channel header's timestamp, RFC 3339 with microseconds
    chained: bool  # an AppendWindow transaction (spec section 14.8): it also writes its lane's tip
    bft: bool  # SmartBFT ordering: a block needs a quorum of distinct consenters (1..n, the forger's orderers)
    quorum: int
    block_policy: str  # the channel's BlockValidation policy, as the verifier describes it

    @classmethod
    def of(cls, block: Any, anchor: dict[str, Any], forger: Forger) -> Facts:
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        orderers = [identity_name(s.serialized) for s in forger.orderers]
        signers = [  # a BFT consenter's signature names its id in the consenter mapping (1..n, as the forger's)
            identity_name(common_pb2.SignatureHeader.FromString(s.signature_header).creator)
            if s.signature_header
            else orderers[common_pb2.IdentifierHeader.FromString(s.identifier_header).identifier - 1]
            for s in md.signatures
        ]
        _, _, _, _, cap = forger.tx(block, anchor["tx_id"])
        record = written_record(cap)
        return cls(
            n=int(block.header.number),
            envelopes=len(block.data.data),
            tx=anchor["tx_id"][:16],
            key=anchor["key"],
            root=record["root"],
            tree_size=record["tree_size"],
            signers=signers,
            client=identity_name(forger.client.serialized),
            peers={org: identity_name(s.serialized) for org, s in forger.peers.items()},
            clients={org: identity_name(s.serialized) for org, s in forger.clients.items()},
            orderers=orderers,
            first_endorser=identity_name(cap.action.endorsements[0].endorser),
            endorsers=[identity_name(e.endorser) for e in cap.action.endorsements],
            tx_time=_rfc3339(block, anchor["tx_id"], forger),
            chained="chain_seq" in record,
            bft=forger.bft,
            quorum=forger.quorum if forger.bft else 1,
            block_policy=_bft_policy(forger) if forger.bft else BLOCK_POLICY,
        )


def _bft_policy(forger: Forger) -> str:
    """configtxgen's BFT BlockValidation: NOutOf(quorum, SignedBy(consenter_i)) over identity principals."""
    names = []
    for s in forger.orderers:
        sid = identities_pb2.SerializedIdentity.FromString(s.serialized)
        der = x509.load_pem_x509_certificate(bytes(sid.id_bytes)).public_bytes(serialization.Encoding.DER)
        names.append(f"'{sid.mspid}:{hashlib.sha256(der).hexdigest()[:16]}'")
    return f"OutOf({forger.quorum}, {', '.join(names)})"


def _rfc3339(block: Any, tx_id: str, forger: Forger) -> str:
    """The transaction's timestamp as written by hand: seconds since the epoch, then nanoseconds."""
    _, _, payload, _, _ = forger.tx(block, tx_id)
    ts = common_pb2.ChannelHeader.FromString(payload.header.channel_header).timestamp
    days, rest = divmod(int(ts.seconds), 86400)
    date = datetime.date(1970, 1, 1) + datetime.timedelta(days=days)
    hh, mm, ss = rest // 3600, rest % 3600 // 60, rest % 60
    return f"{date.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}.{int(ts.nanos) // 1000:06d}Z"


def _action(cap: Any) -> Any:
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    return proposal_pb2.ChaincodeAction.FromString(prp.extension)


def written_record(cap: Any) -> dict[str, Any]:
    """The anchor record the transaction writes."""
    rw = rwset_pb2.TxReadWriteSet.FromString(_action(cap).results)
    for ns in rw.ns_rwset:
        for w in kv_rwset_pb2.KVRWSet.FromString(ns.rwset).writes:
            if not w.key.startswith("\x00"):
                record: dict[str, Any] = json.loads(w.value)
                return record
    raise AssertionError("the transaction writes no anchor record")


# ---------------------------------------------------------------------- building blocks of cases

Case = Callable[[Any, Forger, dict[str, Any]], bytes]  # (block proto, forger, anchor) -> tampered block bytes


def flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def fabric_anchor(bundle: dict[str, Any], channel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the bundle's anchor on ``channel``, the ``fabric_blocks`` item of its block)."""
    anchors = [a for op in bundle["receipt"]["branches"][0]["ops"] for a in op.get("anchors", [])]
    anchor = next(a for a in anchors if a["type"] == "fabric" and a["channel"] == channel)
    item = next(b for b in bundle["fabric_blocks"] if (b["channel"], b["number"]) == (channel, anchor["block_number"]))
    return anchor, item


def expected(template: str, facts: Facts, channel: str) -> str:
    """The reason a case's template gives for this block."""

    def bad(names: list[str]) -> list[str]:
        return [f"orderer: the signature by {s} does not verify" for s in names]

    def fail(problems: list[str], valid: int = 0) -> str:
        """The verifier's account of signatures that do not make the policy (Raft, or a BFT quorum)."""
        if facts.bft:
            return "; ".join([f"{valid} distinct consenter(s) signed, the quorum is {facts.quorum}", *problems])
        return "; ".join(problems) or f"{valid} valid signature(s)"

    q = facts.quorum
    sealed = facts.orderers[:q] if facts.bft else facts.orderers[:1]  # who signs a resealed block
    sealed_also = facts.orderers[: q + 1] if facts.bft else facts.orderers[:2]
    return template.format(
        n=facts.n,
        n1=facts.n + 1,
        envelopes=facts.envelopes,
        tx=facts.tx,
        key=facts.key,
        root=facts.root,
        tree_size=facts.tree_size,
        client=facts.client,
        channel=channel,
        bad_detail=fail(bad(facts.signers)),
        none_detail=fail([]),
        peer_detail=fail(["signer's MSP 'HospitalsMSP' is not a pinned organisation allowed here"]),
        block_policy=facts.block_policy,
        orderer_msp=facts.orderers[0].split(":", 1)[0],
        sealed=", ".join(sealed),
        sealed_also=", ".join(sealed_also),
        sealed_bad_first=", ".join([*sealed[1:], sealed[0]]),
        first_endorser=facts.first_endorser,
        hospitals=facts.peers["Hospitals"],
        insurers=facts.peers["Insurers"],
        insurers_client=facts.clients["Insurers"],
        endorsers=", ".join(facts.endorsers),
        two_bad=fail(bad(sealed_also)),
        zero_writes=f"the transaction wrote no anchor key (an empty window), the anchor names {facts.key}"
        if facts.chained
        else f"tx {facts.tx}… writes 0 anchor keys; an anchor transaction writes exactly one",
        second_write=": the value written under window-x/0 is not an anchor record for that key"
        if facts.chained
        else " writes 2 anchor keys; an anchor transaction writes exactly one",
    )


def tampered(
    bundle: dict[str, Any], forger: Forger, case: Case, channel: str = "insurance"
) -> tuple[dict[str, Any], Facts]:
    """A copy of ``bundle`` whose ``channel`` anchor's block went through ``case``, and that block's facts."""
    bundle = copy.deepcopy(bundle)
    anchor, item = fabric_anchor(bundle, channel)
    facts = Facts.of(common_pb2.Block.FromString(base64.b64decode(item["block"])), anchor, forger)
    block = common_pb2.Block.FromString(base64.b64decode(item["block"]))
    item["block"] = base64.b64encode(case(block, forger, anchor)).decode()
    return bundle, facts


def bft_expected(template: str, facts: Facts) -> str:
    """The reason a BFT case's template gives for this block."""
    names = {f"c{i}": name for i, name in enumerate(facts.orderers)}
    return template.format(n=facts.n, block_policy=facts.block_policy, endorsers=", ".join(facts.endorsers), **names)
