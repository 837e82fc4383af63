"""Crypto material: cryptogen's input, TLS pairs for the chaincode server, the service's identity files."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .base import NetworkBase
from .layout import PEER_ORGS, Layout


def crypto_config(layout: Layout) -> str:
    """cryptogen's input: the orderer organisations (Raft: one with three nodes; BFT: four with one each),
    two peer orgs, NodeOUs, IP SANs."""
    orderer_orgs = []
    for org in layout.orderer_orgs:
        specs = "\n".join(
            f"      - Hostname: {o.name}\n        SANS: [127.0.0.1, localhost]" for o in layout.orderers if o.org == org
        )
        orderer_orgs.append(
            f"  - Name: {org}\n    Domain: {layout.org_domain(org)}\n    EnableNodeOUs: true\n    Specs:\n{specs}"
        )
    peers = "\n".join(
        f"  - Name: {org}\n    Domain: {layout.org_domain(org)}\n    EnableNodeOUs: true\n"
        f"    Template:\n      Count: 1\n      SANS: [127.0.0.1, localhost]\n    Users:\n      Count: 2"
        for org in PEER_ORGS
    )
    return f"OrdererOrgs:\n{chr(10).join(orderer_orgs)}\nPeerOrgs:\n{peers}\n"


def issue_tls_pair(ca_cert: Path, ca_key: Path, out: Path, name: str, *, server: bool) -> None:
    """``out``.crt and ``out``.key: an ECDSA P-256 TLS certificate for 127.0.0.1 signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([usage]), False)
        .sign(signer, hashes.SHA256())
    )
    out.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(out.with_suffix(".key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


class Crypto(NetworkBase):
    """The network's TLS material for the chaincode server and the identity the service signs with."""

    def _chaincode_tls(self) -> dict[str, str]:
        """Mutual TLS between the peers and the chaincode server, from certificates the Hospitals TLS CA
        issues once per network: a server certificate for 127.0.0.1 and a client certificate the
        peers present (in the package's connection.json, as Fabric's ccaas builder expects)."""
        lay = self.layout
        out = lay.root / "chaincode-tls"
        ca_cert = lay.tls_ca("Hospitals")
        if not (out / ".complete").exists():
            ca_key = next((ca_cert.parent).glob("*_sk"))
            out.mkdir(exist_ok=True)
            issue_tls_pair(ca_cert, ca_key, out / "server", "anchor-chaincode", server=True)
            issue_tls_pair(ca_cert, ca_key, out / "client", "peer-chaincode-client", server=False)
            (out / ".complete").touch()
        return {
            "root_cert": ca_cert.read_text(),
            "client_cert": (out / "client.crt").read_text(),
            "client_key": (out / "client.key").read_text(),
        }

    def client_identity_files(self) -> tuple[Path, Path]:
        """(certificate, private key) of Hospitals' User1, the identity the service signs with."""
        user = self.layout.user_dir("Hospitals", "User1") / "msp"
        return next((user / "signcerts").glob("*.pem")), next((user / "keystore").iterdir())
