"""A forger with the private keys of a test network (a running one, or the captured vector's
``forge-keys.json``): rebuilds blocks after tampering so that each deeper check of the verifier (not
only the data hash) is reached on its own."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_response_pb2, transaction_pb2

from receipt_service.fabric.identity import low_s
from receipt_service.fabric.network import Network
from receipt_verifier.fabric.blocks import header_bytes


def name(common_name: str, ou: str | None = None) -> x509.Name:
    """An X.509 name: an optional OU (a NodeOU role), then the CN."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)] if ou else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(
    subject: x509.Name, key: Any, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """A one-day certificate for ``key``'s public half, issued by ``signer`` under ``issuer``'s name."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


class Signer:
    """A certificate, its MSP and its key."""

    def __init__(self, msp_id: str, cert_pem: bytes, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        self.serialized = identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=cert_pem).SerializeToString()

    @classmethod
    def of_msp(cls, msp_id: str, msp_dir: Path) -> Signer:
        cert = next((msp_dir / "signcerts").glob("*.pem")).read_bytes()
        return cls(msp_id, cert, next((msp_dir / "keystore").iterdir()).read_bytes())

    @classmethod
    def of_doc(cls, doc: dict[str, str]) -> Signer:
        return cls(doc["msp_id"], doc["cert"].encode(), doc["key"].encode())

    @classmethod
    def rogue(cls, msp_id: str, common_name: str, ou: str | None = None) -> Signer:
        """A signer claiming ``msp_id`` whose certificate comes from a CA nobody pinned."""
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name(common_name, ou), key, name(f"rogue-ca.{common_name}"), ca_key)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(msp_id, cert.public_bytes(serialization.Encoding.PEM), pem)

    def sign(self, data: bytes) -> bytes:
        return low_s(self.key.sign(data, ec.ECDSA(hashes.SHA256())))


class Forger:
    def __init__(
        self, orderers: list[Signer], clients: dict[str, Signer], peers: dict[str, Signer], *, bft: bool = False
    ) -> None:
        self.orderers, self.clients, self.peers = orderers, clients, peers
        self.bft = bft  # orderers are SmartBFT consenters 1..n: a block needs a quorum of their signatures
        self.orderer = orderers[0]  # who reseals a block (Raft)
        self.client = clients["Hospitals"]  # who signs a transaction again

    @property
    def quorum(self) -> int:
        n = len(self.orderers)
        return -(-(n + (n - 1) // 3 + 1) // 2)

    @classmethod
    def of_network(cls, net: Network) -> Forger:
        lay = net.layout
        return cls(
            [Signer.of_msp(lay.msp_id(o.org), lay.node_dir(o) / "msp") for o in lay.orderers],
            {p.org: Signer.of_msp(f"{p.org}MSP", lay.user_dir(p.org, "User1") / "msp") for p in lay.peers},
            {p.org: Signer.of_msp(f"{p.org}MSP", lay.node_dir(p) / "msp") for p in lay.peers},
            bft=lay.consensus == "bft",
        )

    @classmethod
    def of_keys(cls, doc: dict[str, Any]) -> Forger:
        """From a captured ``forge-keys.json``."""
        return cls(
            [Signer.of_doc(d) for d in doc["orderers"]],
            {org: Signer.of_doc(d) for org, d in doc["clients"].items()},
            {org: Signer.of_doc(d) for org, d in doc["peers"].items()},
            bft=doc.get("consensus") == "bft",
        )

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

    def reseal(
        self, block: Any, last_config: int | None = None, signer: Signer | None = None, *, also: Signer | None = None
    ) -> bytes:
        """Recompute the data hash and sign the block again as an orderer (and ``also`` another; on BFT as a
        quorum of consenters, and one more with ``also``); its bytes."""
        block.header.data_hash = hashlib.sha256(b"".join(block.data.data)).digest()
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        if last_config is not None:
            obm = common_pb2.OrdererBlockMetadata.FromString(md.value)
            obm.last_config.index = last_config
            md.value = obm.SerializeToString()
        der = header_bytes(block.header.number, bytes(block.header.previous_hash), bytes(block.header.data_hash))
        del md.signatures[:]
        if self.bft and signer is None:  # a quorum of consenters (one more with ``also``), as SmartBFT signs
            for i in range(self.quorum + (also is not None)):
                self.consenter_sign(md, der, i + 1, self.orderers[i])
            block.metadata.metadata[0] = md.SerializeToString()
            return bytes(block.SerializeToString())
        s = signer or self.orderer
        sh = common_pb2.SignatureHeader(creator=s.serialized, nonce=b"n" * 24).SerializeToString()
        md.signatures.add(signature_header=sh, signature=s.sign(bytes(md.value) + sh + der))
        if also is not None:
            sh2 = common_pb2.SignatureHeader(creator=also.serialized, nonce=b"m" * 24).SerializeToString()
            md.signatures.add(signature_header=sh2, signature=also.sign(bytes(md.value) + sh2 + der))
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())

    @staticmethod
    def consenter_sign(md: Any, der: bytes, ident: int, signer: Signer) -> None:
        """Add a BFT consenter signature under ``ident`` over ``md.value || IdentifierHeader || DER(header)``."""
        ih = common_pb2.IdentifierHeader(identifier=ident, nonce=b"i" * 24).SerializeToString()
        md.signatures.add(identifier_header=ih, signature=signer.sign(bytes(md.value) + ih + der))


def prp_with_value(cap: Any, change: Any) -> bytes:
    """The proposal response payload with its chaincode action changed by ``change(action)``."""
    from fabric_protos.peer import proposal_pb2

    prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    change(action)
    prp.extension = action.SerializeToString()
    return bytes(prp.SerializeToString())
