"""The Fabric tamper corpus: each case changes one thing in an anchor's block (re-signing what a forger
with the network's keys could re-sign, so that the check under test is the one that fails) and names
the exact reason the verifier must give. The network tests run it over live blocks, the offline
tests over the captured vector; the expected reasons are written here, from Fabric's rules, not
read back from the verifier."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.msp import identities_pb2

from tests.fabric_forge import Forger, Signer, prp_with_value

from .bft import BELOW, BFT_CASES, REFUSED
from .blocks import (
    BLOCK_POLICY,
    ENDORSEMENT_POLICY,
    FAKE_ROOT,
    Case,
    Facts,
    bft_expected,
    expected,
    fabric_anchor,
    flip,
    identity_name,
    tampered,
    written_record,
)

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


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


def _namespace_garbage(action: Any) -> None:
    """The read/write set parses; the anchor namespace's own set of reads and writes does not."""
    rw = rwset_pb2.TxReadWriteSet.FromString(action.results)
    ns = next(n for n in rw.ns_rwset if n.namespace == "anchor")
    ns.rwset = b"\xff\xff\xff"
    action.results = rw.SerializeToString()


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
    "a namespace's reads and writes that do not parse": (  # raised out of the verifier once, ending the run
        tx_change(action_change(_namespace_garbage)),
        "WriteSetError: tx {tx}…: the reads and writes of namespace anchor do not parse",
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


def _forged_duplicate(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
    """Fabric validates the first transaction with an id and marks later ones duplicates: a forged copy
    appended after the anchor's (not signed by anyone) is never the one checked."""
    _pos, _env, payload, tx, cap = f.tx(block, a["tx_id"])
    cap.action.proposal_response_payload = prp_with_value(cap, kv_change(_record(root=FAKE_ROOT)))
    tx.actions[0].payload = cap.SerializeToString()
    payload.data = tx.SerializeToString()
    block.data.data.append(common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString())
    return f.reseal(block)


__all__ = [
    "BELOW",
    "BFT_CASES",
    "BLOCK_POLICY",
    "CASES",
    "ENDORSEMENT_POLICY",
    "FAKE_ROOT",
    "HARMLESS",
    "REFUSED",
    "Case",
    "Facts",
    "action_change",
    "bft_expected",
    "expected",
    "fabric_anchor",
    "flip",
    "identity_name",
    "kv_change",
    "tampered",
    "tx_change",
    "written_record",
]
