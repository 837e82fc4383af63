"""A forger with every private key of a test network: rebuilds blocks after tampering so that each
deeper check of the verifier (not only the data hash) is reached on its own."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_response_pb2, transaction_pb2

from receipt_service.fabric.identity import low_s
from receipt_service.fabric.network import Network
from receipt_verifier.fabric.blocks import header_bytes


class Signer:
    """A certificate, its MSP and its key."""

    def __init__(self, msp_id: str, msp_dir: Path) -> None:
        cert = next((msp_dir / "signcerts").glob("*.pem")).read_bytes()
        key = serialization.load_pem_private_key(next((msp_dir / "keystore").iterdir()).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        self.serialized = identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=cert).SerializeToString()

    def sign(self, data: bytes) -> bytes:
        return low_s(self.key.sign(data, ec.ECDSA(hashes.SHA256())))


class Forger:
    def __init__(self, net: Network) -> None:
        lay = net.layout
        self.orderer = Signer("OrdererMSP", lay.node_dir(lay.orderers[0]) / "msp")
        self.client = Signer("HospitalsMSP", lay.user_dir("Hospitals", "User1") / "msp")
        self.peers = {p.org: Signer(f"{p.org}MSP", lay.node_dir(p) / "msp") for p in lay.peers}

    # -- the anchor transaction inside a block

    def tx(self, block: Any, tx_id: str) -> tuple[int, Any, Any, Any, Any]:
        """(position, envelope, payload, transaction, chaincode action payload) of a tx."""
        for i, raw in enumerate(block.data.data):
            env = common_pb2.Envelope.FromString(raw)
            payload = common_pb2.Payload.FromString(env.payload)
            if common_pb2.ChannelHeader.FromString(payload.header.channel_header).tx_id == tx_id:
                tx = transaction_pb2.Transaction.FromString(payload.data)
                cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
                return i, env, payload, tx, cap
        raise AssertionError(f"tx {tx_id} not in block")

    def put_tx(
        self,
        block: Any,
        pos: int,
        payload: Any,
        tx: Any,
        cap: Any,
        *,
        resign: bool = True,
        signer: Signer | None = None,
    ) -> None:
        """Write a modified transaction back; the creator signs again unless ``resign`` is False."""
        tx.actions[0].payload = cap.SerializeToString()
        payload.data = tx.SerializeToString()
        env = common_pb2.Envelope(payload=payload.SerializeToString())
        env.signature = (signer or self.client).sign(env.payload) if resign else b"\0" * 70
        block.data.data[pos] = env.SerializeToString()

    def endorse(self, cap: Any, orgs: list[str], prp: bytes | None = None) -> None:
        """Replace the endorsements by fresh ones from these orgs' peers (over ``prp`` if given)."""
        if prp is not None:
            cap.action.proposal_response_payload = prp
        del cap.action.endorsements[:]
        for org in orgs:
            peer = self.peers[org]
            sig = peer.sign(bytes(cap.action.proposal_response_payload) + peer.serialized)
            cap.action.endorsements.add(endorser=peer.serialized, signature=sig)

    def reseal(self, block: Any, last_config: int | None = None, signer: Signer | None = None) -> bytes:
        """Recompute the data hash and sign the block again as an orderer; return its bytes."""
        block.header.data_hash = hashlib.sha256(b"".join(block.data.data)).digest()
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        if last_config is not None:
            obm = common_pb2.OrdererBlockMetadata.FromString(md.value)
            obm.last_config.index = last_config
            md.value = obm.SerializeToString()
        s = signer or self.orderer
        sh = common_pb2.SignatureHeader(creator=s.serialized, nonce=b"n" * 24).SerializeToString()
        der = header_bytes(block.header.number, bytes(block.header.previous_hash), bytes(block.header.data_hash))
        del md.signatures[:]
        md.signatures.add(signature_header=sh, signature=s.sign(bytes(md.value) + sh + der))
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())


def prp_with_value(cap: Any, change: Any) -> bytes:
    """The proposal response payload with its chaincode action changed by ``change(action)``."""
    from fabric_protos.peer import proposal_pb2

    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    change(action)
    prp.extension = action.SerializeToString()
    return bytes(prp.SerializeToString())
