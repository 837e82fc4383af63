"""Fabric MSPs with a PKI made here: chains through intermediates, a CA impostor with the right name,
roles from NodeOUs and admin certificates, a key that is not ECDSA, and the identity cache."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fabric_protos.msp import identities_pb2

from receipt_verifier.errors import IdentityError
from receipt_verifier.fabric import msp as msp_module
from receipt_verifier.fabric.msp import MSPs, OrgMSP
from tests.fabric_forge import certificate, name


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class PKI:
    """root -> int1 -> int2 -> leaf, a leaf issued by the root, and an impostor root with the same name."""

    def __init__(self) -> None:
        k = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("root", "int1", "int2", "leaf", "direct", "fake")}
        self.root = certificate(name("root"), k["root"], name("root"), k["root"])
        self.int1 = certificate(name("int1"), k["int1"], name("root"), k["root"])
        self.int2 = certificate(name("int2"), k["int2"], name("int1"), k["int1"])
        self.leaf = certificate(name("leaf", "peer"), k["leaf"], name("int2"), k["int2"])
        self.leaf_key = k["leaf"]
        self.direct = certificate(name("direct", "client"), k["direct"], name("root"), k["root"])
        # the root's name, not its key
        self.forged = certificate(name("forged", "peer"), k["leaf"], name("root"), k["fake"])


PKI_ = PKI()


def _org(intermediates: tuple[x509.Certificate, ...] = (), **kw: Any) -> OrgMSP:
    return OrgMSP("M", (_pem(PKI_.root),), tuple(_pem(c) for c in intermediates), **kw)


def test_chains_through_every_intermediate() -> None:
    org = _org((PKI_.int1, PKI_.int2))
    org.validate(PKI_.leaf)  # three steps: leaf -> int2 -> int1 -> root
    org.validate(PKI_.direct)
    org.validate(PKI_.int2)
    _org((PKI_.int2, PKI_.int1)).validate(PKI_.leaf)  # in any order


@pytest.mark.parametrize(
    ("intermediates", "cert"),
    [((), "leaf"), ((PKI_.int2,), "leaf"), ((PKI_.int1, PKI_.int2), "forged")],
    ids=["no intermediates", "a missing link", "the root's name without its key"],
)
def test_a_broken_chain_is_named(intermediates: tuple[x509.Certificate, ...], cert: str) -> None:
    with pytest.raises(IdentityError) as err:
        _org(intermediates).validate(getattr(PKI_, cert))
    assert str(err.value) == f"certificate CN={cert},OU=peer does not chain to a pinned root CA of M"


def test_roles_come_from_node_ous_and_admin_certificates() -> None:
    ous = {"client": "client", "peer": "peer", "admin": "admin", "orderer": "orderer"}
    org = _org((PKI_.int1, PKI_.int2), node_ous=ous, admin_certs=(_pem(PKI_.direct),))
    assert org.roles(PKI_.leaf, _pem(PKI_.leaf)) == {"member", "peer"}
    assert org.roles(PKI_.direct, _pem(PKI_.direct)) == {"member", "client", "admin"}
    assert _org().roles(PKI_.leaf, _pem(PKI_.leaf)) == {"member"}  # NodeOUs off: no role from the OU


def _serialized(cert: x509.Certificate, msp_id: str = "M") -> bytes:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return bytes(identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=pem).SerializeToString())


def test_a_key_that_is_not_ecdsa_is_named() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate(name("edroot"), root_key, name("edroot"), root_key)
    cert = certificate(name("ed-peer"), key, name("edroot"), root_key)
    ident = MSPs({"E": OrgMSP("E", (_pem(root),))}).identity(_serialized(cert, "E"))
    with pytest.raises(IdentityError) as err:
        ident.verify(key.sign(b"m"), b"m", "tx 1")
    assert str(err.value) == "tx 1: E:ed-peer does not hold an ECDSA key"


def test_a_signature_verifies_and_names_its_signer() -> None:
    ident = MSPs({"M": _org((PKI_.int1, PKI_.int2))}).identity(_serialized(PKI_.leaf))
    assert ident.name == "M:leaf"
    r, s = decode_dss_signature(PKI_.leaf_key.sign(b"m", ec.ECDSA(hashes.SHA256())))
    low, high = sorted((s, msp_module.P256_N - s))
    ident.verify(encode_dss_signature(r, low), b"m", "x")
    with pytest.raises(IdentityError) as err:
        ident.verify(encode_dss_signature(r, high), b"m", "x")
    assert str(err.value) == "x: the signature by M:leaf is high-S, which Fabric rejects"
    with pytest.raises(IdentityError) as err:
        ident.verify(encode_dss_signature(r, low), b"other", "x")
    assert str(err.value) == "x: the signature by M:leaf does not verify"


def test_identities_are_cached_and_the_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(msp_module, "IDENTITY_CACHE", 2)
    msps = MSPs({"M": _org((PKI_.int1, PKI_.int2))})
    leaf, direct, int2 = (_serialized(c) for c in (PKI_.leaf, PKI_.direct, PKI_.int2))
    first = msps.identity(leaf)
    assert msps.identity(leaf) is first  # checked once
    assert msps.identity(direct) is msps.identity(direct)
    assert msps.identity(leaf) is first  # two entries fit
    msps.identity(int2)  # a third: the cache starts over with it
    assert msps.identity(leaf) is not first
    with pytest.raises(IdentityError) as err:
        msps.identity(leaf, frozenset({"Other"}))  # cached, but not allowed here
    assert str(err.value) == "signer's MSP 'M' is not a pinned organisation allowed here"
