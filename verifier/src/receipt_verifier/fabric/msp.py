"""Fabric MSPs as an auditor pins them: root and intermediate CAs and NodeOU roles of each organisation.

Certificate chains are checked as Fabric's MSP does, including its rule for time: a certificate is
checked as of its own NotBefore, so expiry never makes an old block unverifiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2
from google.protobuf.message import DecodeError

from ..errors import IdentityError

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # order of the P-256 group
P256_HALF_N = P256_N // 2  # Fabric refuses signatures whose s is above this
ROLES = ("member", "admin", "client", "peer", "orderer")
IDENTITY_CACHE = 4096  # checked identities kept per channel config; the cache starts over beyond this


@dataclass(frozen=True)
class OrgMSP:
    """One organisation's pinned MSP."""

    msp_id: str
    root_certs: tuple[str, ...]
    intermediate_certs: tuple[str, ...] = ()
    admin_certs: tuple[str, ...] = ()
    node_ous: dict[str, str] | None = None  # role -> OU (client, peer, admin, orderer) when NodeOUs are on

    @cached_property
    def _roots(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(p.encode()) for p in self.root_certs]

    @cached_property
    def _intermediates(self) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(p.encode()) for p in self.intermediate_certs]

    def validate(self, cert: x509.Certificate) -> None:
        """The certificate chains to one of this MSP's roots (through its intermediates)."""
        current = cert
        for _ in range(1 + len(self._intermediates)):
            for root in self._roots:
                if _issued_by(current, root):
                    return
            parent = next((i for i in self._intermediates if _issued_by(current, i)), None)
            if parent is None:
                break
            current = parent
        raise IdentityError(
            f"certificate {cert.subject.rfc4514_string()} does not chain to a pinned root CA of {self.msp_id}"
        )

    def roles(self, cert: x509.Certificate, cert_pem: str) -> frozenset[str]:
        """The roles a validated certificate holds in this MSP."""
        out = {"member"}
        ous = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
        if self.node_ous:
            out |= {role for role, ou in self.node_ous.items() if ou in ous}
        if cert_pem.strip() in (a.strip() for a in self.admin_certs):
            out.add("admin")
        return frozenset(out)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A signer: its MSP, certificate and roles, after its chain was checked."""

    msp_id: str
    cert: x509.Certificate
    roles: frozenset[str]
    serialized: bytes

    @property
    def name(self) -> str:
        """``MSP:CN``."""
        cn = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = cn[0].value if cn else "?"
        return f"{self.msp_id}:{value if isinstance(value, str) else value.decode(errors='replace')}"

    def verify(self, signature: bytes, message: bytes, what: str) -> None:
        """ECDSA-SHA256 over ``message``, low-S as Fabric requires; ``IdentityError`` naming ``what``."""
        key = self.cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise IdentityError(f"{what}: {self.name} does not hold an ECDSA key")
        try:
            _, s = decode_dss_signature(signature)
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise IdentityError(f"{what}: the signature by {self.name} does not verify") from None
        if s > P256_HALF_N:
            raise IdentityError(f"{what}: the signature by {self.name} is high-S, which Fabric rejects")


class MSPs:
    """Every pinned organisation of a channel, with a cache of identities already checked."""

    def __init__(self, orgs: dict[str, OrgMSP]) -> None:
        self.orgs = orgs
        self._cache: dict[bytes, Identity] = {}

    def identity(self, serialized: bytes, allowed: frozenset[str] | None = None) -> Identity:
        """Deserialize and validate a ``SerializedIdentity``; ``allowed`` limits the MSPs it may belong to."""
        cached = self._cache.get(serialized)
        if cached is not None and (allowed is None or cached.msp_id in allowed):
            return cached
        try:
            sid = identities_pb2.SerializedIdentity.FromString(serialized)
        except DecodeError:
            raise IdentityError("a signer identity is not a serialized Fabric identity") from None
        msp_id = str(sid.mspid)
        org = self.orgs.get(msp_id)
        if org is None or (allowed is not None and msp_id not in allowed):
            raise IdentityError(f"signer's MSP {msp_id!r} is not a pinned organisation allowed here")
        try:
            pem = bytes(sid.id_bytes).decode()
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            raise IdentityError(f"a signer of {msp_id} carries no valid PEM certificate") from None
        org.validate(cert)
        ident = Identity(msp_id, cert, org.roles(cert, pem), serialized)
        if len(self._cache) >= IDENTITY_CACHE:
            self._cache.clear()
        self._cache[serialized] = ident
        return ident
