"""A Fabric network of plain processes on 127.0.0.1, no Docker: ``receipt-service fabric up|status|env|down``.

Three Raft orderers (org ``Orderer``), one peer each for ``Hospitals`` and ``Insurers``, the three
domain channels joined through the channel participation API, and the ``anchor`` chaincode run as
one external chaincode server, committed on every channel with ``AND('HospitalsMSP.peer',
'InsurersMSP.peer')``. TLS is on everywhere, mutual between the peers and the chaincode server.
Every step checks before it acts, so ``up`` on a running network only checks it and ``up`` after
``down`` (or after a node died) restarts what is missing with the same crypto and ledgers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ServiceError
from .gateway import Endpoint, GatewayClient, GatewayError
from .identity import Identity

CHANNELS = ("personal-health", "medical-history", "insurance")
CHAINCODE = "anchor"
CHAINCODE_VERSION = "1.0"
# The channel's /Channel/Application/Endorsement policy; the anchor chaincode's definition refers to it,
# so a channel config block alone tells an auditor which endorsements an anchor needs.
ENDORSEMENT_POLICY = "AND('HospitalsMSP.peer','InsurersMSP.peer')"
ENDORSEMENT_POLICY_REF = "/Channel/Application/Endorsement"
BATCH_TIMEOUT = "250ms"
DEFAULT_BASE_PORT = 7050
DOMAIN = "receipts.test"
ORDERERS = 3
PEER_ORGS = ("Hospitals", "Insurers")

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "chaincode" / "network" / "install-fabric.sh"
BUILDER_DIR = REPO / "chaincode" / "network" / "ccaas"
CHAINCODE_SRC = REPO / "chaincode" / "anchor"
CACHE = Path(os.environ.get("FABRIC_CACHE", Path.home() / ".cache" / "health-receipts" / "fabric"))

Progress = Callable[[str], None]


class NetworkError(ServiceError):
    """Bringing up, checking or stopping the Fabric network failed; the message says where."""

    title = "Fabric network error"


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------- programs


def fabric_home(progress: Progress = _quiet) -> Path:
    """Fabric's programs (``bin/``, ``config/``), built once from the pinned source and cached."""
    if not INSTALL_SCRIPT.exists():
        raise NetworkError(f"{INSTALL_SCRIPT} is missing: 'fabric up' runs from a checkout of the repository")
    progress("Fabric programs: checking the build cache (a cold build takes about 2 minutes)")
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), str(CACHE)], stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False
    )
    if proc.returncode != 0:
        raise NetworkError("building Fabric's programs failed (see the messages above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def chaincode_binary(progress: Progress = _quiet) -> Path:
    """The anchor chaincode server, built with ``go build`` once per source checksum and cached."""
    h = hashlib.sha256()
    for path in sorted(CHAINCODE_SRC.glob("*")):
        if path.suffix in (".go", ".mod", ".sum") and not path.name.endswith("_test.go"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    out = CACHE.parent / "chaincode" / h.hexdigest()[:16] / "anchorcc"
    if out.exists():
        return out
    progress("anchor chaincode: go build (about 40 s cold)")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"GOTOOLCHAIN": "auto", **os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    proc = subprocess.run(
        ["go", "build", "-trimpath", "-o", str(out) + ".tmp", "."],
        cwd=CHAINCODE_SRC,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetworkError(f"building the anchor chaincode failed:\n{proc.stderr[-3000:]}")
    os.replace(str(out) + ".tmp", out)
    return out


# ---------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Node:
    """One process of the network."""

    name: str
    kind: str  # orderer | peer | chaincode
    port: int
    ops_port: int | None = None
    admin_port: int | None = None
    chaincode_port: int | None = None
    org: str = ""


@dataclass(frozen=True)
class NodeStatus:
    """What ``fabric status`` reports for one process."""

    node: Node
    pid: int | None
    healthy: bool
    detail: str


@dataclass(frozen=True)
class NetworkStatus:
    """Every process and every channel's height as each peer sees it."""

    nodes: list[NodeStatus]
    heights: dict[str, dict[str, int | str]] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when every process is healthy and every peer reports every channel."""
        return all(n.healthy for n in self.nodes) and all(
            isinstance(h, int) for per in self.heights.values() for h in per.values()
        )


class Layout:
    """Ports and paths of a network directory (pure: no I/O)."""

    def __init__(self, root: Path, base_port: int) -> None:
        self.root = root.resolve()
        self.base_port = base_port
        b = base_port
        self.orderers = [
            Node(f"orderer{i}", "orderer", b + i, ops_port=b + 3 + i, admin_port=b + 6 + i, org="Orderer")
            for i in range(ORDERERS)
        ]
        self.peers = [  # base+10 and base+20: listen, +1 chaincode, +2 operations
            Node(f"peer0.{org.lower()}", "peer", p, ops_port=p + 2, chaincode_port=p + 1, org=org)
            for org, p in ((org, b + 10 * (k + 1)) for k, org in enumerate(PEER_ORGS))
        ]
        self.chaincode = Node("chaincode", "chaincode", b + 30)
        self.crypto = self.root / "crypto"
        self.config = self.root / "config"
        self.artifacts = self.root / "artifacts"
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.data = self.root / "data"

    @property
    def nodes(self) -> list[Node]:
        """Every process, in start order."""
        return [*self.orderers, *self.peers, self.chaincode]

    def node(self, name: str) -> Node:
        """A node by name (``orderer0``, ``peer0.hospitals``, ``chaincode``)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise NetworkError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    # crypto paths (cryptogen's layout)
    def org_domain(self, org: str) -> str:
        """``hospitals.receipts.test``."""
        return f"{org.lower()}.{DOMAIN}"

    def org_dir(self, org: str) -> Path:
        """The org's cryptogen directory."""
        kind = "ordererOrganizations" if org == "Orderer" else "peerOrganizations"
        return self.crypto / kind / self.org_domain(org)

    def node_dir(self, node: Node) -> Path:
        """The node's MSP and TLS directory."""
        sub = "orderers" if node.kind == "orderer" else "peers"
        host = node.name.split(".")[0]
        return self.org_dir(node.org) / sub / f"{host}.{self.org_domain(node.org)}"

    def user_dir(self, org: str, user: str) -> Path:
        """``Admin`` or ``User1``'s MSP and TLS directory."""
        return self.org_dir(org) / "users" / f"{user}@{self.org_domain(org)}"

    def tls_ca(self, org: str) -> Path:
        """The org's TLS root certificate."""
        return self.org_dir(org) / "tlsca" / f"tlsca.{self.org_domain(org)}-cert.pem"

    def peer_of(self, org: str) -> Node:
        """The org's peer."""
        return next(p for p in self.peers if p.org == org)

    def address(self, node: Node) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{node.port}"


# ---------------------------------------------------------------------- generated files


def crypto_config(layout: Layout) -> str:
    """cryptogen's input: one orderer org with three nodes, two peer orgs, NodeOUs, IP SANs."""
    specs = "\n".join(f"      - Hostname: orderer{i}\n        SANS: [127.0.0.1, localhost]" for i in range(ORDERERS))
    peers = "\n".join(
        f"  - Name: {org}\n    Domain: {layout.org_domain(org)}\n    EnableNodeOUs: true\n"
        f"    Template:\n      Count: 1\n      SANS: [127.0.0.1, localhost]\n    Users:\n      Count: 2"
        for org in PEER_ORGS
    )
    return (
        f"OrdererOrgs:\n  - Name: Orderer\n    Domain: {layout.org_domain('Orderer')}\n    EnableNodeOUs: true\n"
        f"    Specs:\n{specs}\nPeerOrgs:\n{peers}\n"
    )


def configtx(layout: Layout) -> str:
    """configtxgen's input: Raft on three orderers, the two peer orgs, our batch timeout."""

    def sig(rule: str) -> str:
        return f'{{Type: Signature, Rule: "{rule}"}}'

    def meta(rule: str) -> str:
        return f'{{Type: ImplicitMeta, Rule: "{rule}"}}'

    orgs = []
    endpoints = ", ".join(f'"{layout.address(o)}"' for o in layout.orderers)
    member, admin = sig("OR('OrdererMSP.member')"), sig("OR('OrdererMSP.admin')")
    orgs.append(
        f"  - &Orderer\n    Name: OrdererMSP\n    ID: OrdererMSP\n    MSPDir: {layout.org_dir('Orderer') / 'msp'}\n"
        f"    Policies:\n      Readers: {member}\n      Writers: {member}\n      Admins: {admin}\n"
        f"    OrdererEndpoints: [{endpoints}]"
    )
    for org in PEER_ORGS:
        m = f"{org}MSP"
        peer = layout.peer_of(org)
        readers = sig(f"OR('{m}.admin','{m}.peer','{m}.client')")
        writers = sig(f"OR('{m}.admin','{m}.client')")
        admins, endorsement = sig(f"OR('{m}.admin')"), sig(f"OR('{m}.peer')")
        orgs.append(
            f"  - &{org}\n    Name: {m}\n    ID: {m}\n    MSPDir: {layout.org_dir(org) / 'msp'}\n"
            f"    Policies:\n      Readers: {readers}\n      Writers: {writers}\n"
            f"      Admins: {admins}\n      Endorsement: {endorsement}\n"
            f"    AnchorPeers: [{{Host: 127.0.0.1, Port: {peer.port}}}]"
        )
    consenters = "\n".join(
        f"          - {{Host: 127.0.0.1, Port: {o.port}, ClientTLSCert: {layout.node_dir(o) / 'tls/server.crt'},"
        f" ServerTLSCert: {layout.node_dir(o) / 'tls/server.crt'}}}"
        for o in layout.orderers
    )
    any_r, any_w, maj_a = meta("ANY Readers"), meta("ANY Writers"), meta("MAJORITY Admins")
    maj_e = meta("MAJORITY Endorsement")
    anchor_policy = sig(ENDORSEMENT_POLICY)  # the anchor chaincode refers to it, so config blocks carry it
    return f"""Organizations:
{chr(10).join(orgs)}
Profiles:
  AnchorChannel:
    Policies:
      Readers: {any_r}
      Writers: {any_w}
      Admins: {maj_a}
    Capabilities: {{V3_0: true}}
    Orderer:
      OrdererType: etcdraft
      BatchTimeout: {BATCH_TIMEOUT}
      BatchSize: {{MaxMessageCount: 100, AbsoluteMaxBytes: 10 MB, PreferredMaxBytes: 2 MB}}
      EtcdRaft:
        Consenters:
{consenters}
        Options: {{TickInterval: 100ms, ElectionTick: 10, HeartbeatTick: 1, MaxInflightBlocks: 5,
                   SnapshotIntervalSize: 16 MB}}
      Organizations: [*Orderer]
      Policies:
        Readers: {any_r}
        Writers: {any_w}
        Admins: {maj_a}
        BlockValidation: {any_w}
      Capabilities: {{V2_0: true}}
    Application:
      Organizations: [*Hospitals, *Insurers]
      Policies:
        Readers: {any_r}
        Writers: {any_w}
        Admins: {maj_a}
        LifecycleEndorsement: {maj_e}
        Endorsement: {anchor_policy}
      Capabilities: {{V2_5: true}}
"""


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


def package_id(package: bytes) -> str:
    """Fabric's package id: ``label:sha256(package)``."""
    return f"{CHAINCODE}:{hashlib.sha256(package).hexdigest()}"


# ---------------------------------------------------------------------- the network


class Network:
    """One network directory: its files, its processes, and the operations on them."""

    def __init__(self, root: Path, base_port: int | None = None) -> None:
        state_file = root / "network.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        stored = state.get("base_port")
        if stored is not None and base_port is not None and stored != base_port:
            raise NetworkError(f"{root} was set up with base port {stored}, not {base_port}; use --wipe to start over")
        self.layout = Layout(root, stored or base_port or DEFAULT_BASE_PORT)
        eph = ephemeral_ports()
        b = self.layout.base_port
        if not 1024 <= b <= 65535 - 30 or (b + 30 >= eph.start and b <= eph.stop - 1):
            raise NetworkError(
                f"base port {b}: the network takes ports {b}..{b + 30}, which must lie in 1024..65535 and outside"
                f" the kernel's ephemeral range {eph.start}..{eph.stop - 1} (choose e.g. 7050 or 17050)"
            )
        self.home = Path(state["fabric_home"]) if "fabric_home" in state else None
        self.state_file = state_file

    # ------------------------------------------------------------------ helpers

    def _bin(self, name: str) -> str:
        if self.home is None:
            raise NetworkError(f"{self.layout.root} has no network; run 'receipt-service fabric up' first")
        return str(self.home / "bin" / name)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE_", "ORDERER_", "FABRIC_"))}
        env["FABRIC_CFG_PATH"] = str(self.layout.config)
        return env

    def admin_env(self, org: str) -> dict[str, str]:
        """The ``CORE_PEER_*`` variables for an org's admin against its peer (for Fabric's ``peer`` CLI)."""
        lay = self.layout
        peer = lay.peer_of(org)
        return {
            "FABRIC_CFG_PATH": str(lay.config),
            "CORE_PEER_LOCALMSPID": f"{org}MSP",
            "CORE_PEER_MSPCONFIGPATH": str(lay.user_dir(org, "Admin") / "msp"),
            "CORE_PEER_ADDRESS": lay.address(peer),
            "CORE_PEER_TLS_ENABLED": "true",
            "CORE_PEER_TLS_ROOTCERT_FILE": str(lay.tls_ca(org)),
            "FABRIC_LOGGING_SPEC": "warning",
        }

    def orderer_args(self, orderer: Node | None = None) -> list[str]:
        """``-o ADDR --tls --cafile CA`` for peer CLI commands that reach an orderer."""
        o = orderer or self.layout.orderers[0]
        return ["-o", self.layout.address(o), "--tls", "--cafile", str(self.layout.tls_ca("Orderer"))]

    def peer_cli(self, org: str, args: Sequence[str], timeout: float = 60) -> str:
        """Run ``peer ARGS`` as the org's admin; stdout, or ``NetworkError`` with stderr."""
        env = {**self._base_env(), **self.admin_env(org)}
        proc = subprocess.run(
            [self._bin("peer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise NetworkError(f"peer {' '.join(args[:3])} as {org} admin failed: {proc.stderr.strip()[-1500:]}")
        return proc.stdout

    def _osnadmin(self, orderer: Node, args: Sequence[str]) -> str:
        lay = self.layout
        admin = lay.user_dir("Orderer", "Admin") / "tls"
        cmd = [
            self._bin("osnadmin"),
            *args,
            "-o",
            f"127.0.0.1:{orderer.admin_port}",
            "--ca-file",
            str(lay.tls_ca("Orderer")),
            "--client-cert",
            str(admin / "client.crt"),
            "--client-key",
            str(admin / "client.key"),
        ]
        deadline = time.monotonic() + 15  # the admin endpoint may open a moment after /healthz answers
        while True:
            proc = subprocess.run(cmd, env=self._base_env(), capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline or "already exists" in proc.stdout + proc.stderr:
                why = (proc.stderr + proc.stdout).strip() or f"exit code {proc.returncode}"
                raise NetworkError(f"osnadmin {' '.join(args[:2])} on {orderer.name} failed: {why}")
            time.sleep(0.3)

    def _pid_file(self, node: Node) -> Path:
        return self.layout.run / f"{node.name}.pid"

    def _log_file(self, node: Node) -> Path:
        return self.layout.logs / f"{node.name}.log"

    def pid(self, node: Node) -> int | None:
        """The node's PID when its process is alive (and is that node's program), else None."""
        try:
            pid = int(self._pid_file(node).read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
        except (OSError, ValueError, IndexError):
            return None
        if state == "Z":
            _reap(pid)
            return None
        program = {"orderer": b"orderer", "peer": b"peer", "chaincode": b"anchorcc"}[node.kind]
        if cmdline and not cmdline.endswith(program):  # empty while the new process is still in exec
            return None
        return pid

    def log_tail(self, node: Node, lines: int = 25) -> str:
        """The last lines of a node's log (ANSI colours stripped)."""
        try:
            text = self._log_file(node).read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ processes

    def _node_env(self, node: Node) -> tuple[list[str], dict[str, str]]:
        lay = self.layout
        env = self._base_env()
        env["FABRIC_LOGGING_SPEC"] = "info"
        d = lay.node_dir(node) if node.kind != "chaincode" else lay.root
        if node.kind == "orderer":
            tls = d / "tls"
            data = lay.data / node.name
            ca = str(lay.tls_ca("Orderer"))
            env.update(
                ORDERER_GENERAL_LISTENADDRESS="127.0.0.1",
                ORDERER_GENERAL_LISTENPORT=str(node.port),
                ORDERER_GENERAL_LOCALMSPID="OrdererMSP",
                ORDERER_GENERAL_LOCALMSPDIR=str(d / "msp"),
                ORDERER_GENERAL_TLS_ENABLED="true",
                ORDERER_GENERAL_TLS_PRIVATEKEY=str(tls / "server.key"),
                ORDERER_GENERAL_TLS_CERTIFICATE=str(tls / "server.crt"),
                ORDERER_GENERAL_TLS_ROOTCAS=f"[{tls / 'ca.crt'}]",
                ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE=str(tls / "server.crt"),
                ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY=str(tls / "server.key"),
                ORDERER_GENERAL_CLUSTER_ROOTCAS=f"[{tls / 'ca.crt'}]",
                ORDERER_GENERAL_BOOTSTRAPMETHOD="none",
                ORDERER_CHANNELPARTICIPATION_ENABLED="true",
                ORDERER_FILELEDGER_LOCATION=str(data / "ledger"),
                ORDERER_CONSENSUS_WALDIR=str(data / "etcdraft" / "wal"),
                ORDERER_CONSENSUS_SNAPDIR=str(data / "etcdraft" / "snapshot"),
                ORDERER_OPERATIONS_LISTENADDRESS=f"127.0.0.1:{node.ops_port}",
                ORDERER_METRICS_PROVIDER="prometheus",
                ORDERER_ADMIN_LISTENADDRESS=f"127.0.0.1:{node.admin_port}",
                ORDERER_ADMIN_TLS_ENABLED="true",
                ORDERER_ADMIN_TLS_PRIVATEKEY=str(tls / "server.key"),
                ORDERER_ADMIN_TLS_CERTIFICATE=str(tls / "server.crt"),
                ORDERER_ADMIN_TLS_ROOTCAS=f"[{ca}]",
                ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED="true",
                ORDERER_ADMIN_TLS_CLIENTROOTCAS=f"[{ca}]",
            )
            return [self._bin("orderer")], env
        if node.kind == "peer":
            tls = d / "tls"
            data = lay.data / node.name
            addr = lay.address(node)
            builders = f"[{{name: ccaas, path: {lay.root / 'builders' / 'ccaas'}}}]"
            env.update(
                CORE_PEER_ID=f"{node.name}.{DOMAIN}",
                CORE_PEER_ADDRESS=addr,
                CORE_PEER_LISTENADDRESS=addr,
                CORE_PEER_CHAINCODEADDRESS=f"127.0.0.1:{node.chaincode_port}",
                CORE_PEER_CHAINCODELISTENADDRESS=f"127.0.0.1:{node.chaincode_port}",
                CORE_PEER_GOSSIP_EXTERNALENDPOINT=addr,
                CORE_PEER_GOSSIP_BOOTSTRAP=addr,
                CORE_PEER_GOSSIP_PUBLISHSTATEINFOINTERVAL="1s",
                CORE_PEER_GOSSIP_REQUESTSTATEINFOINTERVAL="1s",
                CORE_PEER_LOCALMSPID=f"{node.org}MSP",
                CORE_PEER_MSPCONFIGPATH=str(d / "msp"),
                CORE_PEER_TLS_ENABLED="true",
                CORE_PEER_TLS_CERT_FILE=str(tls / "server.crt"),
                CORE_PEER_TLS_KEY_FILE=str(tls / "server.key"),
                CORE_PEER_TLS_ROOTCERT_FILE=str(tls / "ca.crt"),
                CORE_PEER_FILESYSTEMPATH=str(data / "ledger"),
                CORE_LEDGER_SNAPSHOTS_ROOTDIR=str(data / "snapshots"),
                CORE_OPERATIONS_LISTENADDRESS=f"127.0.0.1:{node.ops_port}",
                CORE_METRICS_PROVIDER="prometheus",
                CORE_VM_ENDPOINT="",
                CORE_CHAINCODE_EXTERNALBUILDERS=builders,
            )
            return [self._bin("peer"), "node", "start"], env
        state = json.loads(self.state_file.read_text())
        tls = lay.root / "chaincode-tls"
        env.update(
            CHAINCODE_ID=state["package_id"],
            CHAINCODE_SERVER_ADDRESS=lay.address(node),
            CHAINCODE_TLS_KEY_FILE=str(tls / "server.key"),
            CHAINCODE_TLS_CERT_FILE=str(tls / "server.crt"),
            CHAINCODE_TLS_CLIENT_CA_FILE=str(lay.tls_ca("Hospitals")),
        )
        return [str(lay.root / "bin" / "anchorcc")], env

    def start(self, name: str) -> int:
        """Start one node (no-op when it runs); returns its PID."""
        node = self.layout.node(name)
        pid = self.pid(node)
        if pid is not None:
            return pid
        for port in (node.port, node.ops_port, node.admin_port, node.chaincode_port):
            if port is not None and _port_open(port):
                raise NetworkError(
                    f"cannot start {node.name}: port {port} is already in use by another process"
                    " (choose other ports with --base-port)"
                )
        argv, env = self._node_env(node)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        self.layout.run.mkdir(parents=True, exist_ok=True)
        # posix_spawn, not Popen: the node outlives this call (and this process), so no Popen object
        # should own it; stdin from /dev/null, stdout and stderr appended to the node's log
        log = str(self._log_file(node))
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        self._pid_file(node).write_text(f"{pid}\n")
        return pid

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
        """Stop one node by its PID (SIGKILL after ``timeout``); True if it was running."""
        node = self.layout.node(name)
        pid = self.pid(node)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.pid(node) is not None:
            _reap(pid)
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.05)
        self._pid_file(node).unlink(missing_ok=True)
        return True

    def health(self, node: Node) -> tuple[bool, str]:
        """The node's own health check: ``/healthz`` on its operations port, or a TCP connect."""
        if self.pid(node) is None:
            return False, "not running"
        if node.ops_port is None:
            return (True, "accepting connections") if _port_open(node.port) else (False, "not listening")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.ops_port}/healthz", timeout=2) as resp:
                body = resp.read().decode(errors="replace")
                return resp.status == 200, json.loads(body).get("status", body)
        except urllib.error.HTTPError as exc:
            return False, exc.read().decode(errors="replace").strip()[:300]
        except (OSError, ValueError) as exc:
            return False, f"health endpoint: {exc}"

    def wait_healthy(self, nodes: Sequence[Node], timeout: float = 60) -> None:
        """Wait for every node's health check; on failure name the node and show its log."""
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                ok, detail = self.health(node)
                if ok:
                    break
                if self.pid(node) is None or time.monotonic() > deadline:
                    raise NetworkError(
                        f"{node.name} is not healthy ({detail}); last lines of {self._log_file(node)}:\n"
                        + self.log_tail(node)
                    )
                time.sleep(0.2)

    # ------------------------------------------------------------------ up

    def up(self, progress: Progress = _quiet) -> Path:
        """Bring the network up (or check it); returns the path of the service config it wrote."""
        t0 = time.monotonic()
        lay = self.layout

        def step(msg: str) -> None:
            progress(f"[{time.monotonic() - t0:5.1f}s] {msg}")

        lay.root.mkdir(parents=True, exist_ok=True)
        if self.home is None or not (self.home / "bin" / "peer").exists():
            self.home = fabric_home(step)
        cc_bin = chaincode_binary(step)
        self._prepare_files(cc_bin, step)

        running = [n.name for n in lay.nodes if self.pid(n) is not None]
        step(f"processes: {len(running)} of {len(lay.nodes)} running; starting the others")
        for node in lay.orderers:
            self.start(node.name)
        self.wait_healthy(lay.orderers)
        self._join_orderers(step)
        for node in lay.peers:
            self.start(node.name)
        self.wait_healthy(lay.peers)
        self._join_peers(step)
        self._install_chaincode(step)
        self.start(lay.chaincode.name)
        self.wait_healthy([lay.chaincode], timeout=20)
        self._commit_chaincode(step)
        config = self.write_service_config()
        self._wait_for_gateways(step)
        self._approve_writer(step)
        step(f"network up: {len(lay.nodes)} processes healthy, chaincode {CHAINCODE} on {', '.join(CHANNELS)}")
        step(f"service config: {config}")
        return config

    def _prepare_files(self, cc_bin: Path, step: Progress) -> None:
        lay = self.layout
        assert self.home is not None
        if not (lay.crypto / ".complete").exists():
            step("crypto material: cryptogen (3 orderers, Hospitals and Insurers)")
            shutil.rmtree(lay.crypto, ignore_errors=True)
            (lay.root / "crypto-config.yaml").write_text(crypto_config(lay))
            self._run_tool(
                "cryptogen", ["generate", f"--config={lay.root / 'crypto-config.yaml'}", f"--output={lay.crypto}"]
            )
            (lay.crypto / ".complete").touch()
        lay.config.mkdir(exist_ok=True)
        for name in ("core.yaml", "orderer.yaml"):
            if not (lay.config / name).exists():
                shutil.copy(self.home / "config" / name, lay.config / name)
        lay.artifacts.mkdir(exist_ok=True)
        cfg_dir = lay.root / "configtx"
        cfg_dir.mkdir(exist_ok=True)
        (cfg_dir / "configtx.yaml").write_text(configtx(lay))
        for ch in CHANNELS:
            block = lay.artifacts / f"{ch}.block"
            if not block.exists():
                step(f"genesis block for channel {ch}")
                self._run_tool(
                    "configtxgen",
                    ["-profile", "AnchorChannel", "-outputBlock", str(block) + ".tmp", "-channelID", ch],
                    env={"FABRIC_CFG_PATH": str(cfg_dir)},
                )
                os.replace(str(block) + ".tmp", block)
        builders = lay.root / "builders" / "ccaas" / "bin"
        builders.mkdir(parents=True, exist_ok=True)
        for script in (BUILDER_DIR / "bin").iterdir():
            shutil.copy(script, builders / script.name)
        (lay.root / "bin").mkdir(exist_ok=True)
        target = lay.root / "bin" / "anchorcc"
        if not target.exists() or target.read_bytes() != cc_bin.read_bytes():
            if self.pid(lay.chaincode) is not None:
                self.stop(lay.chaincode.name)
            shutil.copy(cc_bin, str(target) + ".tmp")
            os.replace(str(target) + ".tmp", target)
        package = chaincode_package(lay.address(lay.chaincode), self._chaincode_tls())
        (lay.artifacts / "anchor.tgz").write_bytes(package)
        state = {
            "base_port": lay.base_port,
            "fabric_home": str(self.home),
            "package_id": package_id(package),
            "channels": list(CHANNELS),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

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

    def _run_tool(self, tool: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        proc = subprocess.run(
            [self._bin(tool), *args],
            env={**self._base_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise NetworkError(f"{tool} {' '.join(args[:2])} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        return proc.stdout

    def _join_orderers(self, step: Progress) -> None:
        lay = self.layout

        def join(orderer: Node) -> int:
            listed = json.loads(self._osnadmin(orderer, ["channel", "list"]).split("\n", 1)[1] or "{}")
            have = {c["name"] for c in listed.get("channels") or []}
            todo = [ch for ch in CHANNELS if ch not in have]
            for ch in todo:
                self._osnadmin(
                    orderer,
                    ["channel", "join", "--channelID", ch, "--config-block", str(lay.artifacts / f"{ch}.block")],
                )
            return len(todo)

        with ThreadPoolExecutor(len(lay.orderers)) as pool:
            joined = sum(pool.map(join, lay.orderers))
        step(f"orderers: {joined} channel joins ({len(CHANNELS)} channels on {len(lay.orderers)} orderers)")

    def _join_peers(self, step: Progress) -> None:
        lay = self.layout
        joined = 0
        for peer in lay.peers:
            have = self.peer_cli(peer.org, ["channel", "list"]).split()
            for ch in CHANNELS:
                if ch not in have:
                    self.peer_cli(peer.org, ["channel", "join", "-b", str(lay.artifacts / f"{ch}.block")])
                    joined += 1
        step(f"peers: {joined} channel joins")

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

    def client_identity_files(self) -> tuple[Path, Path]:
        """(certificate, private key) of Hospitals' User1, the identity the service signs with."""
        user = self.layout.user_dir("Hospitals", "User1") / "msp"
        return next((user / "signcerts").glob("*.pem")), next((user / "keystore").iterdir())

    def write_service_config(self) -> Path:
        """``DIR/receipt-service.toml``: anchor to every channel as Hospitals' User1 via both peers' Gateways."""
        lay = self.layout
        cert, key = self.client_identity_files()
        lines = [
            "# Written by 'receipt-service fabric up': serve --config THIS_FILE anchors to every channel.",
            "[fabric]",
            'msp_id = "HospitalsMSP"',
            f"cert = {json.dumps(str(cert))}",
            f"key = {json.dumps(str(key))}",
            f'chaincode = "{CHAINCODE}"',
            f"channels = {json.dumps(list(CHANNELS))}",
        ]
        for peer in lay.peers:
            lines += [
                "",
                "[[fabric.gateways]]",
                f'endpoint = "{lay.address(peer)}"',
                f"tls_root_cert = {json.dumps(str(lay.tls_ca(peer.org)))}",
            ]
        path = lay.root / "receipt-service.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _wait_for_gateways(self, step: Progress, timeout: float = 60) -> None:
        """Wait until every peer's Gateway can gather endorsements from both orgs on every channel.

        Right after a commit or a restart, discovery does not yet know the other org's peer
        ("no combination of peers can be derived"). The probe has a ``GetWriter`` proposal endorsed
        (both orgs must sign it under the policy) and never submits it, so nothing is written.
        """
        lay = self.layout
        identity = Identity.from_files("HospitalsMSP", *self.client_identity_files())

        async def probe(peer: Node) -> float:
            client = GatewayClient(identity, [Endpoint.from_files(lay.address(peer), lay.tls_ca(peer.org))])
            t0 = time.monotonic()
            try:
                for ch in CHANNELS:
                    while True:
                        try:
                            await client.endorse(ch, CHAINCODE, "GetWriter", [])
                            break
                        except GatewayError as exc:
                            if time.monotonic() - t0 > timeout:
                                raise NetworkError(f"the Gateway of {peer.name} is not ready on {ch}: {exc}") from None
                        await asyncio.sleep(0.25)
            finally:
                await client.close()
            return time.monotonic() - t0

        async def probe_all() -> list[float]:
            return await asyncio.gather(*(probe(p) for p in lay.peers))

        with ThreadPoolExecutor(1) as pool:  # its own event loop, whether or not the caller runs one
            waited = pool.submit(asyncio.run, probe_all()).result()
        step(f"gateways: both orgs endorse on every channel (waited {max(waited):.1f} s for discovery)")

    def config_blocks(self) -> dict[str, bytes]:
        """Each channel's newest config block, fetched from the Hospitals peer (what auditors pin)."""
        out = {}
        with tempfile.TemporaryDirectory() as tmp:
            for ch in CHANNELS:
                path = Path(tmp) / f"{ch}.block"
                self.peer_cli("Hospitals", ["channel", "fetch", "config", str(path), "-c", ch])
                out[ch] = path.read_bytes()
        return out

    def update_channel_config(self, channel: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """Change ``channel``'s config as an operator does with Fabric's own tools: fetch the config
        block, ``edit`` its JSON config in place, compute the update with ``configtxlator`` and submit
        it signed by the orderer admin; returns once the orderer accepted it."""
        lay = self.layout
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)

            def lator(verb: str, kind: str, src: str, dst: str) -> None:
                """``configtxlator proto_encode|proto_decode`` from one file of ``t`` to another."""
                self._run_tool(
                    "configtxlator", [verb, "--type", kind, "--input", str(t / src), "--output", str(t / dst)]
                )

            self.peer_cli("Hospitals", ["channel", "fetch", "config", str(t / "config.block"), "-c", channel])
            lator("proto_decode", "common.Block", "config.block", "block.json")
            config = json.loads((t / "block.json").read_text())["data"]["data"][0]["payload"]["data"]["config"]
            (t / "old.json").write_text(json.dumps(config))
            edit(config)
            (t / "new.json").write_text(json.dumps(config))
            lator("proto_encode", "common.Config", "old.json", "old.pb")
            lator("proto_encode", "common.Config", "new.json", "new.pb")
            update = ["compute_update", "--channel_id", channel, "--original", str(t / "old.pb")]
            self._run_tool("configtxlator", [*update, "--updated", str(t / "new.pb"), "--output", str(t / "update.pb")])
            lator("proto_decode", "common.ConfigUpdate", "update.pb", "update.json")
            envelope = {
                "payload": {
                    "header": {"channel_header": {"channel_id": channel, "type": 2}},  # CONFIG_UPDATE
                    "data": {"config_update": json.loads((t / "update.json").read_text())},
                }
            }
            (t / "env.json").write_text(json.dumps(envelope))
            lator("proto_encode", "common.Envelope", "env.json", "env.pb")
            admin = {
                **self.admin_env("Hospitals"),
                "CORE_PEER_LOCALMSPID": "OrdererMSP",
                "CORE_PEER_MSPCONFIGPATH": str(lay.user_dir("Orderer", "Admin") / "msp"),
            }
            argv = ["channel", "update", "-f", str(t / "env.pb"), "-c", channel, *self.orderer_args()]
            self._run_tool("peer", argv, admin)

    def set_batch_timeout(self, channel: str, timeout: str) -> None:
        """Set ``channel``'s ``Orderer/BatchTimeout`` (e.g. ``"300ms"``) through a config update."""

        def edit(config: dict[str, Any]) -> None:
            config["channel_group"]["groups"]["Orderer"]["values"]["BatchTimeout"]["value"]["timeout"] = timeout

        self.update_channel_config(channel, edit)

    # ------------------------------------------------------------------ status, env, down

    def status(self) -> NetworkStatus:
        """Every process's PID and health, and every channel's height on each peer."""
        nodes = []
        for node in self.layout.nodes:
            ok, detail = self.health(node)
            nodes.append(NodeStatus(node, self.pid(node), ok, detail))
        heights: dict[str, dict[str, int | str]] = {}
        for peer in self.layout.peers:
            per: dict[str, int | str] = {}
            for ch in CHANNELS:
                if self.pid(peer) is None:
                    per[ch] = "peer down"
                    continue
                try:
                    out = self.peer_cli(peer.org, ["channel", "getinfo", "-c", ch], timeout=15)
                    per[ch] = int(json.loads(out.split("Blockchain info:", 1)[1])["height"])
                except (NetworkError, IndexError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
                    per[ch] = f"error: {str(exc)[-120:]}"
            heights[peer.name] = per
        return NetworkStatus(nodes, heights)

    def env(self, org: str) -> dict[str, str]:
        """Shell variables for Fabric's own CLI as the org's admin."""
        if org not in PEER_ORGS:
            raise NetworkError(f"unknown org {org!r}; choose {' or '.join(PEER_ORGS)}")
        if self.home is None:
            raise NetworkError(f"{self.layout.root} has no network; run 'receipt-service fabric up' first")
        env = self.admin_env(org)
        env.pop("FABRIC_LOGGING_SPEC")
        env["PATH"] = f"{self.home / 'bin'}:{os.environ.get('PATH', '')}"
        env["ORDERER_CA"] = str(self.layout.tls_ca("Orderer"))
        env["ORDERER_ADDRESS"] = self.layout.address(self.layout.orderers[0])
        env["FABRIC_LOGGING_SPEC"] = "grpc=error:info"  # the peer CLI logs every gRPC state change at INFO
        return env

    def down(self, wipe: bool = False) -> list[str]:
        """Stop every process ``up`` started (by PID); with ``wipe`` also delete the directory."""
        stopped = [n.name for n in reversed(self.layout.nodes) if self.stop(n.name)]
        if wipe and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
        return stopped


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


def _port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc: connecting to a free port in the
    ephemeral range can connect the socket to itself and then block the port for whoever binds it)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(want):
                return True
    return False


def free_base_port(start: int = DEFAULT_BASE_PORT, step: int = 100) -> int:
    """The first base port from ``start`` whose 31 ports are free and outside the ephemeral range."""
    eph = ephemeral_ports()
    base = start
    while base + 30 <= 65535:
        clear = base + 30 < eph.start or base >= eph.stop
        if clear and not any(_port_open(p) for p in range(base, base + 31)):
            return base
        base += step
    raise NetworkError(f"no free range of 31 ports from {start} on")


def ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (network ports must stay outside it)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def iter_env_lines(env: Mapping[str, str]) -> Iterator[str]:
    """``export NAME='value'`` lines for a shell."""
    for k, v in env.items():
        yield f"export {k}={shlex.quote(v)}"
