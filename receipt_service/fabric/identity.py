"""A Fabric client identity: an X.509 certificate with its MSP id, and an ECDSA P-256 key that signs low-S."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fabric_protos.msp import identities_pb2

from receipt_verifier.fabric.msp import P256_HALF_N, P256_N

from ..errors import ConfigError


def low_s(der: bytes) -> bytes:
    """The same ECDSA signature with s <= n/2, as Fabric requires."""
    r, s = decode_dss_signature(der)
    if s > P256_HALF_N:
        s = P256_N - s
    return encode_dss_signature(r, s)


@dataclass(frozen=True)
class Identity:
    """Who signs proposals, envelopes and commit-status requests."""

    msp_id: str
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_files(cls, msp_id: str, cert: Path, key: Path) -> Identity:
        """Load a PEM certificate and its PEM private key, checking that they belong together."""
        try:
            cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
        except OSError as exc:
            raise ConfigError(f"fabric identity: cannot read {exc.filename}: {exc.strerror}") from None
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
            private = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise ConfigError(f"fabric identity: {cert} or {key} is not PEM ({exc})") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
            raise ConfigError(f"fabric identity: {key} must be an ECDSA P-256 private key")
        if certificate.public_key() != private.public_key():
            raise ConfigError(f"fabric identity: {key} is not the private key of {cert}")
        return cls(msp_id, cert_pem, private)

    @property
    def creator(self) -> bytes:
        """The serialized ``msp.SerializedIdentity`` Fabric puts in every header."""
        return bytes(identities_pb2.SerializedIdentity(mspid=self.msp_id, id_bytes=self.cert_pem).SerializeToString())

    def sign(self, message: bytes) -> bytes:
        """ECDSA over SHA-256(message), DER, low-S."""
        return low_s(self.key.sign(message, ec.ECDSA(hashes.SHA256())))

    def tx_id(self, nonce: bytes) -> str:
        """Fabric's transaction id: hex(SHA-256(nonce || creator))."""
        return hashlib.sha256(nonce + self.creator).hexdigest()
