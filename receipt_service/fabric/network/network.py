"""The ``Network`` class: ``up``, ``status``, ``env`` and ``down`` over the concern mixins."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..gateway import Endpoint, GatewayClient, GatewayError
from ..identity import Identity
from .binaries import BUILDER_DIR, chaincode_binary, fabric_home
from .channels import Channels, configtx
from .crypto import Crypto, crypto_config
from .layout import CHAINCODE, CHANNELS, PEER_ORGS, NetworkError, NetworkStatus, Node, NodeStatus, Progress, _quiet
from .lifecycle import Lifecycle, chaincode_package, package_id
from .processes import Processes


class Network(Processes, Channels, Lifecycle, Crypto):
    """One network directory: its files, its processes, and the operations on them."""

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
        leaders = self.wait_for_leaders(CHANNELS)
        step(f"ordering ({lay.consensus}): leaders {', '.join(f'{ch} {who}' for ch, who in leaders.items())}")
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
            orderers = ", ".join(lay.orderer_orgs)
            step(f"crypto material: cryptogen ({len(lay.orderers)} orderers of {orderers}; Hospitals and Insurers)")
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
            "consensus": lay.consensus,
            "fabric_home": str(self.home),
            "package_id": package_id(package),
            "channels": list(CHANNELS),
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

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
        leaders = {}
        for orderer in self.layout.orderers:
            for channel, leads in self.leading(orderer).items():
                if leads:
                    leaders[channel] = orderer.name
        return NetworkStatus(nodes, heights, self.layout.consensus, dict(sorted(leaders.items())))

    def env(self, org: str) -> dict[str, str]:
        """Shell variables for Fabric's own CLI as the org's admin."""
        if org not in PEER_ORGS:
            raise NetworkError(f"unknown org {org!r}; choose {' or '.join(PEER_ORGS)}")
        if self.home is None:
            raise NetworkError(f"{self.layout.root} has no network; run 'receipt-service fabric up' first")
        env = self.admin_env(org)
        env.pop("FABRIC_LOGGING_SPEC")
        env["PATH"] = f"{self.home / 'bin'}:{os.environ.get('PATH', '')}"
        env["ORDERER_CA"] = str(self.layout.tls_ca(self.layout.orderers[0].org))
        env["ORDERER_ADDRESS"] = self.layout.address(self.layout.orderers[0])
        env["FABRIC_LOGGING_SPEC"] = "grpc=error:info"  # the peer CLI logs every gRPC state change at INFO
        return env

    def down(self, wipe: bool = False) -> list[str]:
        """Stop every process ``up`` started (by PID); with ``wipe`` also delete the directory."""
        stopped = [n.name for n in reversed(self.layout.nodes) if self.stop(n.name)]
        if wipe and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
        return stopped


def iter_env_lines(env: Mapping[str, str]) -> Iterator[str]:
    """``export NAME='value'`` lines for a shell."""
    for k, v in env.items():
        yield f"export {k}={shlex.quote(v)}"
