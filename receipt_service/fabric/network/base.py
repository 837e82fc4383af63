"""The state every part of a network shares: its layout, state file, and Fabric's CLIs run as an org's admin."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .layout import CONSENSUS, DEFAULT_BASE_PORT, PORT_SPAN, Layout, NetworkError, Node, ephemeral_ports


class NetworkBase:
    """One network directory: its layout, its state file and the helpers that run Fabric's programs."""

    def __init__(self, root: Path, base_port: int | None = None, consensus: str | None = None) -> None:
        state_file = root / "network.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        stored = state.get("base_port")
        if stored is not None and base_port is not None and stored != base_port:
            raise NetworkError(f"{root} was set up with base port {stored}, not {base_port}; use --wipe to start over")
        was = state.get("consensus", "raft") if state else None  # networks from before BFT ran Raft
        if was is not None and consensus is not None and was != consensus:
            raise NetworkError(f"{root} was set up with {was} ordering, not {consensus}; use --wipe to start over")
        self.layout = Layout(root, stored or base_port or DEFAULT_BASE_PORT, was or consensus or CONSENSUS[0])
        eph = ephemeral_ports()
        b, last = self.layout.base_port, PORT_SPAN - 1
        if not 1024 <= b <= 65535 - last or (b + last >= eph.start and b <= eph.stop - 1):
            raise NetworkError(
                f"base port {b}: the network takes ports {b}..{b + last}, which must lie in 1024..65535 and outside"
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
        return ["-o", self.layout.address(o), "--tls", "--cafile", str(self.layout.tls_ca(o.org))]

    def peer_cli(self, org: str, args: Sequence[str], timeout: float = 60) -> str:
        """Run ``peer ARGS`` as the org's admin; stdout, or ``NetworkError`` with stderr."""
        env = {**self._base_env(), **self.admin_env(org)}
        proc = subprocess.run(
            [self._bin("peer"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise NetworkError(f"peer {' '.join(args[:3])} as {org} admin failed: {proc.stderr.strip()[-1500:]}")
        return proc.stdout

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
