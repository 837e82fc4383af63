"""The nodes' processes: their environments, PID files, logs, start, stop and health checks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .base import NetworkBase
from .layout import DOMAIN, NetworkError, Node, _port_open


class Processes(NetworkBase):
    """Start, stop and check the network's processes (by PID file, never by name)."""

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

    def _node_env(self, node: Node) -> tuple[list[str], dict[str, str]]:
        lay = self.layout
        env = self._base_env()
        env["FABRIC_LOGGING_SPEC"] = "info"
        d = lay.node_dir(node) if node.kind != "chaincode" else lay.root
        if node.kind == "orderer":
            tls = d / "tls"
            data = lay.data / node.name
            ca = str(lay.tls_ca(node.org))
            cluster_cas = ",".join(str(lay.tls_ca(org)) for org in lay.orderer_orgs)
            wal = "smartbft" if lay.consensus == "bft" else "etcdraft"
            env.update(
                ORDERER_GENERAL_LISTENADDRESS="127.0.0.1",
                ORDERER_GENERAL_LISTENPORT=str(node.port),
                ORDERER_GENERAL_LOCALMSPID=lay.msp_id(node.org),
                ORDERER_GENERAL_LOCALMSPDIR=str(d / "msp"),
                ORDERER_GENERAL_TLS_ENABLED="true",
                ORDERER_GENERAL_TLS_PRIVATEKEY=str(tls / "server.key"),
                ORDERER_GENERAL_TLS_CERTIFICATE=str(tls / "server.crt"),
                ORDERER_GENERAL_TLS_ROOTCAS=f"[{cluster_cas}]",
                ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE=str(tls / "server.crt"),
                ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY=str(tls / "server.key"),
                ORDERER_GENERAL_CLUSTER_ROOTCAS=f"[{cluster_cas}]",
                ORDERER_GENERAL_BOOTSTRAPMETHOD="none",
                ORDERER_CHANNELPARTICIPATION_ENABLED="true",
                ORDERER_FILELEDGER_LOCATION=str(data / "ledger"),
                ORDERER_CONSENSUS_WALDIR=str(data / wal / "wal"),
                ORDERER_CONSENSUS_SNAPDIR=str(data / wal / "snapshot"),
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
                ok, detail = resp.status == 200, json.loads(body).get("status", body)
        except urllib.error.HTTPError as exc:
            return False, exc.read().decode(errors="replace").strip()[:300]
        except (OSError, ValueError) as exc:
            return False, f"health endpoint: {exc}"
        if ok and not _port_open(node.port):  # a peer serves /healthz before its own port listens
            return False, f"healthy, but port {node.port} not listening yet"
        return ok, detail

    def _metrics(self, node: Node, name: str) -> dict[str, float]:
        """Per channel, an orderer's consensus metric (``is_leader``, ``leader_id``); {} when down."""
        if node.kind != "orderer" or self.pid(node) is None:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.ops_port}/metrics", timeout=2) as resp:
                text = resp.read().decode(errors="replace")
        except (OSError, ValueError):
            return {}
        pattern = rf'^consensus_(?:BFT|etcdraft)_{name}\{{channel="([^"]+)"\}} (\S+)$'
        return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}

    def leading(self, node: Node) -> dict[str, bool]:
        """Per channel, whether this orderer leads its consensus (its ``is_leader`` metric); {} when down."""
        return {ch: v == 1.0 for ch, v in self._metrics(node, "is_leader").items()}

    def wait_for_leaders(self, channels: Sequence[str], timeout: float = 90) -> dict[str, str]:
        """Wait until every channel has a running leader that the running orderers agree on (SmartBFT
        may change its view right after the joins or a restart; a request sent meanwhile waits for it)."""
        deadline = time.monotonic() + timeout
        lay = self.layout
        while True:
            running = [o for o in lay.orderers if self.pid(o) is not None]
            leads = {o.name: self.leading(o) for o in running}
            leaders: dict[str, str] = {}
            for ch in channels:
                who = [name for name, per in leads.items() if per.get(ch)]
                if lay.consensus == "bft":  # the view most running consenters are in names its leader
                    views = [self._metrics(o, "leader_id").get(ch) for o in running]
                    top = max(set(views), key=views.count) if views else None
                    agreed = top is not None and views.count(top) * 2 > len(running)
                    leader = lay.orderers[int(top) - 1].name if agreed and top is not None else None
                    if leader in who:
                        leaders[ch] = leader
                elif len(who) == 1:
                    leaders[ch] = who[0]
            if len(leaders) == len(channels):
                return leaders
            if time.monotonic() > deadline:
                missing = ", ".join(ch for ch in channels if ch not in leaders)
                raise NetworkError(f"no agreed consensus leader on {missing} after {timeout:.0f} s")
            time.sleep(0.5)

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


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
