"""The anchor chaincode's lifecycle: package, install, approve, commit, and its approved writer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .crypto import Crypto
from .layout import (
    CHAINCODE,
    CHAINCODE_VERSION,
    CHANNELS,
    ENDORSEMENT_POLICY_REF,
    PEER_ORGS,
    NetworkError,
    Progress,
)


def chaincode_package(address: str, tls: Mapping[str, str] | None = None) -> bytes:
    """The ccaas package (reproducible bytes: same input, same package id); ``tls`` holds the PEM
    ``root_cert`` of the chaincode server and the ``client_cert``/``client_key`` the peers present."""

    def tgz(files: Mapping[str, bytes]) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
            gz.write(raw.getvalue())
        return out.getvalue()

    conn: dict[str, object] = {"address": address, "dial_timeout": "10s", "tls_required": tls is not None}
    if tls is not None:
        conn.update(client_auth_required=True, **tls)
    connection = json.dumps(conn, sort_keys=True).encode()
    metadata = json.dumps({"type": "ccaas", "label": CHAINCODE}).encode()
    return tgz({"metadata.json": metadata, "code.tar.gz": tgz({"connection.json": connection})})


def package_id(package: bytes) -> str:
    """Fabric's package id: ``label:sha256(package)``."""
    return f"{CHAINCODE}:{hashlib.sha256(package).hexdigest()}"


class Lifecycle(Crypto):
    """The anchor chaincode on every channel: installed, approved by both orgs, committed, its writer approved."""

    def _install_chaincode(self, step: Progress) -> None:
        lay = self.layout
        pkg = json.loads(self.state_file.read_text())["package_id"]
        for peer in lay.peers:
            out = self.peer_cli(peer.org, ["lifecycle", "chaincode", "queryinstalled", "--output", "json"])
            installed = {c["package_id"] for c in (json.loads(out or "{}").get("installed_chaincodes") or [])}
            if pkg not in installed:
                step(f"installing chaincode package on {peer.name}")
                self.peer_cli(peer.org, ["lifecycle", "chaincode", "install", str(lay.artifacts / "anchor.tgz")])

    def _definition_args(self, channel: str) -> list[str]:
        return [
            "--channelID",
            channel,
            "--name",
            CHAINCODE,
            "--version",
            CHAINCODE_VERSION,
            "--sequence",
            "1",
            "--channel-config-policy",
            ENDORSEMENT_POLICY_REF,
        ]

    def _commit_chaincode(self, step: Progress) -> None:
        lay = self.layout
        pkg = json.loads(self.state_file.read_text())["package_id"]

        def committed(channel: str) -> bool:
            try:
                out = self.peer_cli(
                    "Hospitals", ["lifecycle", "chaincode", "querycommitted", "-C", channel, "-n", CHAINCODE]
                )
            except NetworkError as exc:
                if "404" in str(exc) or "not defined" in str(exc):
                    return False
                raise
            return "Sequence: 1" in out

        def on_channel(channel: str) -> str:
            if committed(channel):
                return f"{channel}: committed"
            readiness = json.loads(
                _retry(
                    lambda: self.peer_cli(
                        "Hospitals",
                        [
                            "lifecycle",
                            "chaincode",
                            "checkcommitreadiness",
                            *self._definition_args(channel),
                            "--output",
                            "json",
                        ],
                    )
                )
            )["approvals"]
            for org in PEER_ORGS:
                if not readiness.get(f"{org}MSP"):
                    approve = ["lifecycle", "chaincode", "approveformyorg", *self.orderer_args()]
                    approve += [*self._definition_args(channel), "--package-id", pkg]
                    _retry(partial(self.peer_cli, org, approve))
            peers: list[str] = []
            for peer in lay.peers:
                peers += ["--peerAddresses", lay.address(peer), "--tlsRootCertFiles", str(lay.tls_ca(peer.org))]
            _retry(
                lambda: self.peer_cli(
                    "Hospitals",
                    ["lifecycle", "chaincode", "commit", *self.orderer_args(), *self._definition_args(channel), *peers],
                )
            )
            return f"{channel}: approved by both orgs and committed"

        with ThreadPoolExecutor(len(CHANNELS)) as pool:
            for line in pool.map(on_channel, CHANNELS):
                step(f"chaincode {CHAINCODE}: {line}")

    def writer_fingerprint(self) -> str:
        """SHA-256 (hex) of the service identity's certificate: the writer both orgs approve."""
        cert = x509.load_pem_x509_certificate(self.client_identity_files()[0].read_bytes())
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def invoke(self, org: str, channel: str, fn: str, args: Sequence[str]) -> str:
        """``peer chaincode invoke`` of the anchor chaincode as the org's admin, endorsed by both orgs' peers,
        waiting for the commit."""
        lay = self.layout
        peers: list[str] = []
        for peer in lay.peers:
            peers += ["--peerAddresses", lay.address(peer), "--tlsRootCertFiles", str(lay.tls_ca(peer.org))]
        call = json.dumps({"Args": [fn, *args]})
        cli = ["chaincode", "invoke", *self.orderer_args(), "-C", channel, "-n", CHAINCODE, "-c", call, *peers]
        return self.peer_cli(org, [*cli, "--waitForEvent"])

    def _approve_writer(self, step: Progress) -> None:
        """Each org's admin approves the service identity as the only writer on every channel (spec 14.8)."""
        fingerprint = self.writer_fingerprint()

        def on_channel(channel: str) -> str:
            query = json.dumps({"Args": ["GetWriter"]})
            out = self.peer_cli("Hospitals", ["chaincode", "query", "-C", channel, "-n", CHAINCODE, "-c", query])
            approvals = json.loads(out or "{}").get("approvals") or {}
            missing = [org for org in PEER_ORGS if approvals.get(f"{org}MSP") != fingerprint]
            for org in missing:
                _retry(partial(self.invoke, org, channel, "ApproveWriter", [fingerprint]))
            return f"{channel}: writer {fingerprint[:16]} approved by " + ("both orgs" if missing else "both (already)")

        with ThreadPoolExecutor(len(CHANNELS)) as pool:
            for line in pool.map(on_channel, CHANNELS):
                step(f"chaincode {CHAINCODE}: {line}")


def _retry(call: Callable[[], str], attempts: int = 40, delay: float = 0.5) -> str:
    """Retry a CLI call while the ordering service elects leaders or peers discover each other."""
    for i in range(attempts):
        try:
            return call()
        except NetworkError as exc:
            transient = any(
                s in str(exc)
                for s in ("SERVICE_UNAVAILABLE", "UNAVAILABLE", "connection refused", "no Raft leader", "failed to")
            )
            if not transient or i == attempts - 1:
                raise
        time.sleep(delay)
    raise AssertionError("unreachable")
