"""The Fabric tamper corpus: each case changes one thing in an anchor's block (re-signing what a forger
with the network's keys could re-sign, so that the check under test is the one that fails) and names
the exact reason the verifier must give. The network tests run it over live blocks, the offline
tests over the captured vector; the expected reasons are written here, from Fabric's rules, not
read back from the verifier."""

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
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2

from receipt_verifier.fabric.blocks import header_bytes
from tests.fabric_forge import Forger, Signer, prp_with_value

BLOCK_POLICY = "ANY Writers of [OR('OrdererMSP.member')]"
ENDORSEMENT_POLICY = "AND('HospitalsMSP.peer', 'InsurersMSP.peer')"
FAKE_ROOT = "0f" * 32
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


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


def _envelope(which: Callable[[Any, Forger, dict[str, Any]], int]) -> Case:
    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        i = which(block, f, a)
        block.data.data[i] = flip(block.data.data[i])
        return bytes(block.SerializeToString())

    return case


def _signatures(change: Callable[[Any], None]) -> Case:
    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        change(md)
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())

    return case


def _flip_signatures(md: Any) -> None:
    for sig in md.signatures:
        sig.signature = flip(sig.signature, 10)


def _unparsable_signature_header(md: Any) -> None:
    md.signatures[0].signature_header = b"\xff\xff\xff"


def _header(field: str) -> Case:
    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        if field == "number":
            block.header.number += 1
        else:
            setattr(block.header, field, flip(getattr(block.header, field)))
        return bytes(block.SerializeToString())

    return case


def _valid_signatures_wrong_data(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    """A well-signed envelope swapped in; the header and the orderer signature stay valid for the old data."""
    pos, _env, payload, tx, cap = f.tx(block, a["tx_id"])
    f.put_tx(block, pos, payload, tx, cap)
    return bytes(block.SerializeToString())


def _resealed_by_peer(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    return f.reseal(block, signer=f.peers["Hospitals"])


def _metadata(value: list[bytes] | None) -> Case:
    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        del block.metadata.metadata[:]
        block.metadata.metadata.extend(value or [])
        return bytes(block.SerializeToString())

    return case


def _other_envelope_garbage(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    pos = f.tx(block, a["tx_id"])[0]
    block.data.data.append(b"\xff\xff\xff")  # after the anchor's, so the anchor's position is unchanged
    assert pos < len(block.data.data) - 1
    return f.reseal(block)


def _no_header(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    block.ClearField("header")
    return bytes(block.SerializeToString())


def tx_change(change: Callable[[Forger, Any, Any, Any], None], resign: bool = True) -> Case:
    """Change the anchor transaction, let the client sign it again (unless not ``resign``), reseal the block."""

    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        pos, _env, payload, tx, cap = f.tx(block, a["tx_id"])
        change(f, payload, tx, cap)
        f.put_tx(block, pos, payload, tx, cap, resign=resign)
        return f.reseal(block)

    return case


def _flip_endorsement(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    cap.action.endorsements[0].signature = flip(cap.action.endorsements[0].signature, 12)


def _endorsed_by(*orgs: str) -> Callable[[Forger, Any, Any, Any], None]:
    def change(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
        f.endorse(cap, list(orgs))

    return change


def _rogue_endorser(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    """Hospitals endorses; an Insurers 'peer' from a CA nobody pinned endorses too."""
    rogue = Signer.rogue("InsurersMSP", "peer0.insurers.receipts.test", ou="peer")
    f.endorse(cap, ["Hospitals"])
    signature = rogue.sign(bytes(cap.action.proposal_response_payload) + rogue.serialized)
    cap.action.endorsements.add(endorser=rogue.serialized, signature=signature)


def _foreign_endorsement(make: Callable[[Forger], tuple[bytes, bytes]]) -> Callable[[Forger, Any, Any, Any], None]:
    """Both orgs endorse; then an endorsement ``(endorser, signature)`` made by ``make`` is added."""

    def change(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
        f.endorse(cap, ["Hospitals", "Insurers"])
        endorser, signature = make(f)
        cap.action.endorsements.add(endorser=endorser, signature=signature)

    return change


def _by(who: Callable[[Forger], Signer]) -> Callable[[Forger], tuple[bytes, bytes]]:
    def make(f: Forger) -> tuple[bytes, bytes]:
        return who(f).serialized, b""  # refused before any signature is checked

    return make


def _client_for_insurers(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    """Hospitals' peer and Insurers' client (a valid identity in the wrong role) endorse."""
    f.endorse(cap, ["Hospitals"])
    client = f.clients["Insurers"]
    signature = client.sign(bytes(cap.action.proposal_response_payload) + client.serialized)
    cap.action.endorsements.add(endorser=client.serialized, signature=signature)


def _high_s(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    """Both orgs endorse; the first signature is replaced by its high-S twin (valid ECDSA, refused by Fabric)."""
    f.endorse(cap, ["Hospitals", "Insurers"])
    r, s = decode_dss_signature(cap.action.endorsements[0].signature)
    cap.action.endorsements[0].signature = encode_dss_signature(r, P256_N - s)


def _channel_header(**changes: Any) -> Callable[[Forger, Any, Any, Any], None]:
    def change(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
        ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        for name, value in changes.items():
            setattr(ch, name, value)
        payload.header.channel_header = ch.SerializeToString()

    return change


def _nonce(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    sh = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    sh.nonce = b"another nonce, another tx id"
    payload.header.signature_header = sh.SerializeToString()


def _proposal(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    cap.chaincode_proposal_payload = bytes(cap.chaincode_proposal_payload) + b"\x12\x00"


def _two_actions(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
    tx.actions.add().CopyFrom(tx.actions[0])


def _creator_is_the_orderer(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    pos, _env, payload, tx, cap = f.tx(block, a["tx_id"])
    sh = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    sh.creator = f.orderer.serialized
    payload.header.signature_header = sh.SerializeToString()
    f.put_tx(block, pos, payload, tx, cap, signer=f.orderer)
    return f.reseal(block)


def _garbage_transaction(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    pos, _env, payload, _tx, _cap = f.tx(block, a["tx_id"])
    payload.data = b"\xff\xff\xff"
    env = common_pb2.Envelope(payload=payload.SerializeToString())
    env.signature = f.client.sign(env.payload)
    block.data.data[pos] = env.SerializeToString()
    return f.reseal(block)


def action_change(change: Callable[[Any], None]) -> Callable[[Forger, Any, Any, Any], None]:
    """Change the endorsed chaincode action; both orgs endorse the result again."""

    def endorse(f: Forger, payload: Any, tx: Any, cap: Any) -> None:
        f.endorse(cap, ["Hospitals", "Insurers"], prp_with_value(cap, change))

    return endorse


def _status(action: Any) -> None:
    action.response.status = 500


def _chaincode(action: Any) -> None:
    action.chaincode_id.name = "other"


def _rwset_garbage(action: Any) -> None:
    action.results = b"\xff\xff\xff"


def kv_change(change: Callable[[Any, Any], None]) -> Callable[[Any], None]:
    """Change the read/write set: ``change(TxReadWriteSet, the anchor namespace's KVRWSet)``."""

    def on_action(action: Any) -> None:
        rw = rwset_pb2.TxReadWriteSet.FromString(action.results)
        ns = next(n for n in rw.ns_rwset if any(not w.key.startswith("\x00") for w in _kv(n).writes))
        kv = _kv(ns)
        change(rw, kv)
        ns.rwset = kv.SerializeToString()
        action.results = rw.SerializeToString()

    return on_action


def _kv(ns: Any) -> Any:
    return kv_rwset_pb2.KVRWSet.FromString(ns.rwset)


def _anchor_write(kv: Any) -> Any:
    return next(w for w in kv.writes if not w.key.startswith("\x00"))


def _record(**changes: Any) -> Callable[[Any, Any], None]:
    def change(rw: Any, kv: Any) -> None:
        w = _anchor_write(kv)
        record = json.loads(w.value)
        record.update(changes)
        if "key" in changes:
            w.key = changes["key"]
        w.value = json.dumps(record).encode()

    return change


def _value(value: bytes) -> Callable[[Any, Any], None]:
    def change(rw: Any, kv: Any) -> None:
        _anchor_write(kv).value = value

    return change


def _write_elsewhere(rw: Any, kv: Any) -> None:
    other = kv_rwset_pb2.KVRWSet()
    other.writes.add(key="k", value=b"v")
    rw.ns_rwset.add(namespace="other", rwset=other.SerializeToString())


def _delete_the_write(rw: Any, kv: Any) -> None:
    _anchor_write(kv).is_delete = True


def _second_write(rw: Any, kv: Any) -> None:
    kv.writes.add(key="window-x/0", value=b"{}")


def _harmless(rw: Any, kv: Any) -> None:
    """A delete and a ``\\x00``-prefixed (metadata) key next to the anchor write: neither is an anchor key."""
    kv.writes.add(key="old-key", is_delete=True)
    kv.writes.add(key="\x00meta", value=b"x")


# name -> (case, expected reason with {fields} of Facts)
CASES: dict[str, tuple[Case, str]] = {
    # the block: data hash, orderer signatures, metadata
    "a byte of the anchor envelope": (
        _envelope(lambda b, f, a: f.tx(b, a["tx_id"])[0]),
        "DataHashError: block {n}: the header's data hash does not match its {envelopes} envelopes",
    ),
    "a byte of the first envelope": (
        _envelope(lambda b, f, a: 0),
        "DataHashError: block {n}: the header's data hash does not match its {envelopes} envelopes",
    ),
    "a byte of the last envelope": (
        _envelope(lambda b, f, a: len(b.data.data) - 1),
        "DataHashError: block {n}: the header's data hash does not match its {envelopes} envelopes",
    ),
    "the header's data hash": (
        _header("data_hash"),
        "DataHashError: block {n}: the header's data hash does not match its {envelopes} envelopes",
    ),
    "valid orderer signature, data hash not matching": (
        _valid_signatures_wrong_data,
        "DataHashError: block {n}: the header's data hash does not match its {envelopes} envelopes",
    ),
    "each orderer signature": (
        _signatures(_flip_signatures),
        "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({bad_detail})",
    ),
    "the header's number": (
        _header("number"),
        "OrdererSignatureError: block {n1}: orderer signatures do not satisfy {block_policy} ({bad_detail})",
    ),
    "the header's previous hash": (
        _header("previous_hash"),
        "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({bad_detail})",
    ),
    "no orderer signature": (
        _signatures(lambda md: md.ClearField("signatures")),
        "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({none_detail})",
    ),
    "an orderer signature header that does not parse": (
        lambda b, f, a: _signatures(_unparsable_signature_header)(common_pb2.Block.FromString(f.reseal(b)), f, a),
        "OrdererSignatureError: block {n}: an orderer signature header does not parse",  # Fabric: the whole block
    ),
    "the block signed by a peer": (
        _resealed_by_peer,
        "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({peer_detail})",
    ),
    "another config than the pinned one": (
        lambda b, f, a: f.reseal(b, last_config=1),
        (
            "ConfigMismatchError: the block was made under config block 1; the trust file pins block 0"
            " and the evidence does not include block 1"
        ),
    ),
    "no metadata": (_metadata(None), "BlockFormatError: block {n} has no signature metadata"),
    "signature metadata that does not parse": (
        _metadata([b"\xff\xff\xff"]),
        "BlockFormatError: block {n}: the signature metadata does not parse",
    ),
    "not a block": (
        lambda b, f, a: b"\xff\xff\xff",
        "BlockFormatError: the evidence is not a Fabric block (protobuf does not parse)",
    ),
    "no header": (_no_header, "BlockFormatError: the block has no header or no data"),
    "another envelope that does not parse": (
        _other_envelope_garbage,
        "BlockFormatError: block {n} envelope {envelopes}: an envelope does not parse",
    ),
    # the transaction: creator, channel, proposal, endorsements
    "the creator's signature": (
        tx_change(lambda *_: None, resign=False),
        "CreatorSignatureError: tx {tx}… envelope: the signature by {client} does not verify",
    ),
    "the creator is the orderer": (
        _creator_is_the_orderer,
        "CreatorSignatureError: signer's MSP '{orderer_msp}' is not a pinned organisation allowed here",
    ),
    "the nonce (tx id binding)": (
        tx_change(_nonce),
        "CreatorSignatureError: tx {tx}…: the tx id is not SHA-256(nonce || creator)",
    ),
    "the transaction's channel": (
        tx_change(_channel_header(channel_id="personal-health")),
        "ChannelMismatchError: tx {tx}… belongs to channel personal-health, not {channel}",
    ),
    "the transaction's type": (
        tx_change(_channel_header(type=4)),  # ORDERER_TRANSACTION
        "BlockFormatError: tx {tx}… is not an endorser transaction (type 4)",
    ),
    "two actions": (tx_change(_two_actions), "BlockFormatError: tx {tx}… has 2 actions; an anchor has one"),
    "a transaction that does not parse": (
        _garbage_transaction,
        "BlockFormatError: tx {tx}…: the transaction does not parse",
    ),
    "the proposal payload": (
        tx_change(_proposal),
        "EndorsementError: tx {tx}…: the endorsed proposal hash is not the transaction's proposal",
    ),
    "an endorsement signature": (
        tx_change(_flip_endorsement),
        "EndorsementError: tx {tx}… endorsement: the signature by {first_endorser} does not verify",
    ),
    "endorsements below the policy": (
        tx_change(_endorsed_by("Hospitals")),
        "EndorsementError: tx {tx}…: endorsed by {hospitals}, which does not satisfy " + ENDORSEMENT_POLICY,
    ),
    "one org endorsing twice": (
        tx_change(_endorsed_by("Hospitals", "Hospitals")),
        "EndorsementError: tx {tx}…: endorsed by {hospitals}, which does not satisfy " + ENDORSEMENT_POLICY,
    ),
    "an endorser from an unpinned CA": (
        tx_change(_rogue_endorser),
        (
            "EndorsementError: certificate CN=peer0.insurers.receipts.test,OU=peer does not chain to a pinned root CA"
            " of InsurersMSP"
        ),
    ),
    "an endorsement by the orderer beside both orgs'": (
        tx_change(_foreign_endorsement(_by(lambda f: f.orderer))),
        "EndorsementError: signer's MSP '{orderer_msp}' is not a pinned organisation allowed here",
    ),
    "an endorser that is not a serialized identity": (
        tx_change(_foreign_endorsement(lambda f: (b"\xff\xff\xff", b""))),
        "EndorsementError: a signer identity is not a serialized Fabric identity",
    ),
    "an endorser without a certificate": (
        tx_change(
            _foreign_endorsement(
                lambda f: (
                    identities_pb2.SerializedIdentity(mspid="InsurersMSP", id_bytes=b"no PEM").SerializeToString(),
                    b"",
                )
            )
        ),
        "EndorsementError: a signer of InsurersMSP carries no valid PEM certificate",
    ),
    "a client endorsing for its org": (
        tx_change(_client_for_insurers),
        "EndorsementError: tx {tx}…: endorsed by {hospitals}, {insurers_client}, which does not satisfy "
        + ENDORSEMENT_POLICY,
    ),
    "a high-S endorsement signature": (
        tx_change(_high_s),
        "EndorsementError: tx {tx}… endorsement: the signature by {hospitals} is high-S, which Fabric rejects",
    ),
    "both orderer signatures": (
        lambda b, f, a: _flip_all(f.reseal(b, also=f.orderers[1])),
        "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({two_bad})",
    ),
    "no endorsement": (
        tx_change(_endorsed_by()),
        "EndorsementError: tx {tx}…: endorsed by nobody, which does not satisfy " + ENDORSEMENT_POLICY,
    ),
    "the written root, not endorsed": (
        tx_change(
            lambda f, p, t, cap: setattr(
                cap.action, "proposal_response_payload", prp_with_value(cap, kv_change(_record(root=FAKE_ROOT)))
            )
        ),
        "EndorsementError: tx {tx}… endorsement: the signature by {first_endorser} does not verify",
    ),
    # the write: what the endorsed chaincode action wrote
    "the written root, endorsed again": (
        tx_change(action_change(kv_change(_record(root=FAKE_ROOT)))),
        "WriteSetError: the transaction wrote root " + FAKE_ROOT + ", the branch computes {root}",
    ),
    "the written tree size": (
        tx_change(action_change(kv_change(_record(tree_size=999_999)))),
        "WriteSetError: the transaction wrote tree size 999999, not {tree_size}",
    ),
    "the written key": (
        tx_change(action_change(kv_change(_record(key="window-x/0")))),
        "WriteSetError: the transaction wrote key window-x/0, the anchor names {key}",
    ),
    "the chaincode's status": (
        tx_change(action_change(_status)),
        "WriteSetError: tx {tx}…: the chaincode answered status 500",
    ),
    "the chaincode's name": (
        tx_change(action_change(_chaincode)),
        "WriteSetError: tx {tx}… ran chaincode other, not anchor",
    ),
    "a read/write set that does not parse": (
        tx_change(action_change(_rwset_garbage)),
        "WriteSetError: tx {tx}…: the read/write set does not parse",
    ),
    "a write to another namespace": (
        tx_change(action_change(kv_change(_write_elsewhere))),
        "WriteSetError: tx {tx}… writes to namespace other",
    ),
    "the write deleted": (
        tx_change(action_change(kv_change(_delete_the_write))),
        "WriteSetError: {zero_writes}",
    ),
    "a second write": (
        tx_change(action_change(kv_change(_second_write))),
        "WriteSetError: tx {tx}…{second_write}",
    ),
    "a value that is not JSON": (
        tx_change(action_change(kv_change(_value(b"not json")))),
        "WriteSetError: tx {tx}…: the value written under {key} is not an anchor record",
    ),
    "a value that is not an object": (
        tx_change(action_change(kv_change(_value(b"[1, 2]")))),
        "WriteSetError: tx {tx}…: the value written under {key} is not an anchor record for that key",
    ),
    "a record naming another key": (
        tx_change(action_change(kv_change(_value(json.dumps({"key": "window-x/0"}).encode())))),
        "WriteSetError: tx {tx}…: the value written under {key} is not an anchor record for that key",
    ),
}

# Changes that must not matter: the anchor still verifies, with this reason.
RESEALED = "block {n} of insurance signed by {sealed}; tx endorsed by {endorsers}"
HARMLESS: dict[str, tuple[Case, str]] = {
    "a delete and a metadata key next to the anchor write": (
        tx_change(action_change(kv_change(_harmless))),
        "block {n} of insurance signed by {sealed}; tx endorsed by {hospitals}, {insurers}",
    ),
    "the block signed twice by the same orderer": (lambda b, f, a: _signed_twice(b, f), RESEALED),
    "a bad orderer signature before a good one": (
        lambda b, f, a: _bad_signature_first(b, f),
        "block {n} of insurance signed by {sealed_bad_first}; tx endorsed by {endorsers}",
    ),
    "the block signed by two orderers": (
        lambda b, f, a: f.reseal(b, also=f.orderers[1]),
        "block {n} of insurance signed by {sealed_also}; tx endorsed by {endorsers}",
    ),
    "a transaction without an id before the anchor's": (lambda b, f, a: _config_like_envelope_first(b, f), RESEALED),
    "a forged copy of the anchor transaction after it": (lambda b, f, a: _forged_duplicate(b, f, a), RESEALED),
}


def _flip_all(data: bytes) -> bytes:
    block = common_pb2.Block.FromString(data)
    md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
    _flip_signatures(md)
    block.metadata.metadata[0] = md.SerializeToString()
    return bytes(block.SerializeToString())


def _bad_signature_first(block: Any, f: Forger) -> bytes:
    """A flipped copy of the orderer's signature before the good one: the good one still counts."""
    f.reseal(block)
    md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
    good = common_pb2.MetadataSignature()
    good.CopyFrom(md.signatures[0])
    md.signatures[0].signature = flip(good.signature, 10)
    md.signatures.add().CopyFrom(good)
    block.metadata.metadata[0] = md.SerializeToString()
    return bytes(block.SerializeToString())


def _signed_twice(block: Any, f: Forger) -> bytes:
    f.reseal(block)
    md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
    md.signatures.add().CopyFrom(md.signatures[0])
    block.metadata.metadata[0] = md.SerializeToString()
    return bytes(block.SerializeToString())


def _config_like_envelope_first(block: Any, f: Forger) -> bytes:
    """An envelope with an empty tx id (as config envelopes have) at position 0."""
    ch = common_pb2.ChannelHeader(type=1, channel_id="insurance")
    payload = common_pb2.Payload(header=common_pb2.Header(channel_header=ch.SerializeToString()))
    block.data.data.insert(0, common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString())
    return f.reseal(block)


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


def _forged_duplicate(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    """Fabric validates the first transaction with an id and marks later ones duplicates: a forged copy
    appended after the anchor's (not signed by anyone) is never the one checked."""
    _pos, _env, payload, tx, cap = f.tx(block, a["tx_id"])
    cap.action.proposal_response_payload = prp_with_value(cap, kv_change(_record(root=FAKE_ROOT)))
    tx.actions[0].payload = cap.SerializeToString()
    payload.data = tx.SerializeToString()
    block.data.data.append(common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString())
    return f.reseal(block)


# ---------------------------------------------------------------------- SmartBFT: quorums of consenters


def _bft_signed(plan: list[tuple[str, int, int]]) -> Case:
    """Reseal with exactly these signatures, in order: (style, id, signer), where style is ``bft`` (an
    identifier header naming ``id``), ``raft`` (a signature header naming the signer) or ``forged`` (a
    bft signature whose bytes are flipped); ``signer`` indexes the forger's orderers, -1 the Hospitals peer."""

    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        f.reseal(block)
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        del md.signatures[:]
        h = block.header
        der = header_bytes(h.number, bytes(h.previous_hash), bytes(h.data_hash))
        for style, ident, who in plan:
            signer = f.peers["Hospitals"] if who < 0 else f.orderers[who]
            if style == "raft":
                sh = common_pb2.SignatureHeader(creator=signer.serialized, nonce=b"r" * 24).SerializeToString()
                md.signatures.add(signature_header=sh, signature=signer.sign(bytes(md.value) + sh + der))
                continue
            Forger.consenter_sign(md, der, ident, signer)
            if style == "forged":
                md.signatures[-1].signature = flip(md.signatures[-1].signature, 10)
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())

    return case


# name -> (case, reason template); templates name the forger's orderers as {c0}..{c3} (consenters 1..4).
# A reason that starts with "block" is a valid anchor's; the others are refusals.
REFUSED = "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({detail})"
BELOW = "2 distinct consenter(s) signed, the quorum is 3"
BFT_CASES: dict[str, tuple[Case, str]] = {
    "one consenter's signature forged, the other three a quorum": (
        _bft_signed([("bft", 1, 0), ("forged", 2, 1), ("bft", 3, 2), ("bft", 4, 3)]),
        "block {n} of insurance signed by {c0}, {c2}, {c3}; tx endorsed by {endorsers}",
    ),
    "signatures below the quorum": (_bft_signed([("bft", 1, 0), ("bft", 2, 1)]), REFUSED.replace("{detail}", BELOW)),
    "one consenter counted twice": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 2, 1)]),
        REFUSED.replace("{detail}", BELOW),
    ),
    "a third signature under an id not in the mapping": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 9, 2)]),
        REFUSED.replace("{detail}", BELOW + "; a signature names consenter id 9, not in the consenter mapping"),
    ),
    "a consenter's key signing under another consenter's id": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 4, 2)]),
        REFUSED.replace("{detail}", BELOW + "; orderer: the signature by {c3} does not verify"),
    ),
    "a Raft-style signature header by a consenter (Fabric counts it)": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("raft", 0, 2)]),
        "block {n} of insurance signed by {c0}, {c1}, {c2}; tx endorsed by {endorsers}",
    ),
    "a Raft-style signature header by a peer": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("raft", 0, -1)]),
        REFUSED.replace("{detail}", BELOW + "; signer's MSP 'HospitalsMSP' is not a pinned organisation allowed here"),
    ),
}


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
