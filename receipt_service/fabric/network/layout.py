"""The network's shape: constants, nodes, ports and paths (no I/O but the port checks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ServiceError

CHANNELS = ("personal-health", "medical-history", "insurance")
CHAINCODE = "anchor"
CHAINCODE_VERSION = "1.0"
# The channel's /Channel/Application/Endorsement policy; the anchor chaincode's definition refers to it,
# so a channel config block alone tells an auditor which endorsements an anchor needs.
ENDORSEMENT_POLICY = "AND('HospitalsMSP.peer','InsurersMSP.peer')"
ENDORSEMENT_POLICY_REF = "/Channel/Application/Endorsement"
BATCH_TIMEOUT = "250ms"
DEFAULT_BASE_PORT = 7050
PORT_SPAN = 40  # a network takes ports base .. base + PORT_SPAN - 1
DOMAIN = "receipts.test"
CONSENSUS = ("bft", "raft")  # SmartBFT (the default): no organisation orders alone; Raft: one orderer organisation
ORDERERS = 3  # Raft's orderers, all of the organisation "Orderer"
# SmartBFT's consenters, each of its own organisation: n = 4 tolerates f = 1 faulty or malicious consenter
BFT_ORDERER_ORGS = ("HospitalsOrdering", "InsurersOrdering", "Regulator", "PatientsTrust")
PEER_ORGS = ("Hospitals", "Insurers")

Progress = Callable[[str], None]


class NetworkError(ServiceError):
    """Bringing up, checking or stopping the Fabric network failed; the message says where."""

    title = "Fabric network error"


def _quiet(_: str) -> None:
    pass


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
    consensus: str = "bft"
    leaders: dict[str, str] = field(default_factory=dict)  # channel -> the orderer that leads it

    @property
    def healthy(self) -> bool:
        """True when every process is healthy and every peer reports every channel."""
        return all(n.healthy for n in self.nodes) and all(
            isinstance(h, int) for per in self.heights.values() for h in per.values()
        )


class Layout:
    """Ports and paths of a network directory (pure: no I/O)."""

    def __init__(self, root: Path, base_port: int, consensus: str = "bft") -> None:
        if consensus not in CONSENSUS:
            raise NetworkError(f"consensus {consensus!r}: choose {' or '.join(CONSENSUS)}")
        self.root = root.resolve()
        self.base_port = base_port
        self.consensus = consensus
        b = base_port
        if consensus == "raft":
            self.orderers = [
                Node(f"orderer{i}", "orderer", b + i, ops_port=b + 3 + i, admin_port=b + 6 + i, org="Orderer")
                for i in range(ORDERERS)
            ]
        else:  # base+0..3 listen, base+31..34 operations, base+35..38 admin
            self.orderers = [
                Node(f"orderer{i}", "orderer", b + i, ops_port=b + 31 + i, admin_port=b + 35 + i, org=org)
                for i, org in enumerate(BFT_ORDERER_ORGS)
            ]
        self.orderer_orgs = tuple(dict.fromkeys(o.org for o in self.orderers))
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
        kind = "ordererOrganizations" if org in self.orderer_orgs else "peerOrganizations"
        return self.crypto / kind / self.org_domain(org)

    def node_dir(self, node: Node) -> Path:
        """The node's MSP and TLS directory."""
        sub = "orderers" if node.kind == "orderer" else "peers"
        host = node.name.split(".")[0]
        return self.org_dir(node.org) / sub / f"{host}.{self.org_domain(node.org)}"

    def signing_cert(self, node: Node) -> Path:
        """The node's signing certificate (cryptogen names it after the host)."""
        host = node.name.split(".")[0]
        return self.node_dir(node) / "msp" / "signcerts" / f"{host}.{self.org_domain(node.org)}-cert.pem"

    def user_dir(self, org: str, user: str) -> Path:
        """``Admin`` or ``User1``'s MSP and TLS directory."""
        return self.org_dir(org) / "users" / f"{user}@{self.org_domain(org)}"

    def tls_ca(self, org: str) -> Path:
        """The org's TLS root certificate."""
        return self.org_dir(org) / "tlsca" / f"tlsca.{self.org_domain(org)}-cert.pem"

    def msp_id(self, org: str) -> str:
        """``HospitalsMSP``."""
        return f"{org}MSP"

    def peer_of(self, org: str) -> Node:
        """The org's peer."""
        return next(p for p in self.peers if p.org == org)

    def address(self, node: Node) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{node.port}"


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
    """The first base port from ``start`` whose ``PORT_SPAN`` ports are free and outside the ephemeral range."""
    eph = ephemeral_ports()
    base = start
    last = PORT_SPAN - 1
    while base + last <= 65535:
        clear = base + last < eph.start or base >= eph.stop
        if clear and not any(_port_open(p) for p in range(base, base + PORT_SPAN)):
            return base
        base += step
    raise NetworkError(f"no free range of {PORT_SPAN} ports from {start} on")


def ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (network ports must stay outside it)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)
