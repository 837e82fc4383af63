"""Channels: configtxgen's input, joining orderers and peers, reading and updating channel configs."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fabric_protos.common import common_pb2

from .base import NetworkBase
from .layout import BATCH_TIMEOUT, CHANNELS, ENDORSEMENT_POLICY, PEER_ORGS, Layout, NetworkError, Node, Progress

# Every option, so none falls to a zero value. A leader that stops ordering pending requests is replaced
# within seconds (RequestComplainTimeout); an idle one within LeaderHeartbeatTimeout.
SMARTBFT_OPTIONS = (
    "{RequestBatchMaxCount: 100, RequestBatchMaxBytes: 10485760, RequestBatchMaxInterval: 250ms,"
    " IncomingMessageBufferSize: 200, RequestPoolSize: 2000, RequestForwardTimeout: 2s,"
    " RequestComplainTimeout: 6s, RequestAutoRemoveTimeout: 3m0s, ViewChangeResendInterval: 2s,"
    " ViewChangeTimeout: 10s, LeaderHeartbeatTimeout: 20s, LeaderHeartbeatCount: 10, CollectTimeout: 1s,"
    " SyncOnStart: false, SpeedUpViewChange: false}"
)


def configtx(layout: Layout) -> str:
    """configtxgen's input: SmartBFT on four orderers of four organisations (or Raft on three of one),
    the two peer orgs, our batch timeout."""

    def sig(rule: str) -> str:
        return f'{{Type: Signature, Rule: "{rule}"}}'

    def meta(rule: str) -> str:
        return f'{{Type: ImplicitMeta, Rule: "{rule}"}}'

    orgs = []
    for org in layout.orderer_orgs:
        m = layout.msp_id(org)
        endpoints = ", ".join(f'"{layout.address(o)}"' for o in layout.orderers if o.org == org)
        member, admin = sig(f"OR('{m}.member')"), sig(f"OR('{m}.admin')")
        orgs.append(
            f"  - &{org}\n    Name: {m}\n    ID: {m}\n    MSPDir: {layout.org_dir(org) / 'msp'}\n"
            f"    Policies:\n      Readers: {member}\n      Writers: {member}\n      Admins: {admin}\n"
            f"    OrdererEndpoints: [{endpoints}]"
        )
    for org in PEER_ORGS:
        m = layout.msp_id(org)
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
    if layout.consensus == "raft":
        consenters = "\n".join(
            f"          - {{Host: 127.0.0.1, Port: {o.port}, ClientTLSCert: {layout.node_dir(o) / 'tls/server.crt'},"
            f" ServerTLSCert: {layout.node_dir(o) / 'tls/server.crt'}}}"
            for o in layout.orderers
        )
        consensus = (
            f"      OrdererType: etcdraft\n      EtcdRaft:\n        Consenters:\n{consenters}\n"
            "        Options: {TickInterval: 100ms, ElectionTick: 10, HeartbeatTick: 1, MaxInflightBlocks: 5,\n"
            "                   SnapshotIntervalSize: 16 MB}"
        )
    else:  # the BlockValidation policy is then computed by configtxgen: a quorum of distinct consenters
        mapping = "\n".join(
            f"        - {{ID: {i + 1}, Host: 127.0.0.1, Port: {o.port}, MSPID: {layout.msp_id(o.org)},"
            f" Identity: {layout.signing_cert(o)},"
            f" ClientTLSCert: {layout.node_dir(o) / 'tls/server.crt'},"
            f" ServerTLSCert: {layout.node_dir(o) / 'tls/server.crt'}}}"
            for i, o in enumerate(layout.orderers)
        )
        consensus = f"      OrdererType: BFT\n      ConsenterMapping:\n{mapping}\n      SmartBFT: {SMARTBFT_OPTIONS}"
    any_r, any_w, maj_a = meta("ANY Readers"), meta("ANY Writers"), meta("MAJORITY Admins")
    maj_e = meta("MAJORITY Endorsement")
    anchor_policy = sig(ENDORSEMENT_POLICY)  # the anchor chaincode refers to it, so config blocks carry it
    orderer_orgs = ", ".join(f"*{org}" for org in layout.orderer_orgs)
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
{consensus}
      BatchTimeout: {BATCH_TIMEOUT}
      BatchSize: {{MaxMessageCount: 100, AbsoluteMaxBytes: 10 MB, PreferredMaxBytes: 2 MB}}
      Organizations: [{orderer_orgs}]
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


class Channels(NetworkBase):
    """The channels on the orderers and peers, and their config blocks."""

    def _osnadmin(self, orderer: Node, args: Sequence[str]) -> str:
        lay = self.layout
        admin = lay.user_dir(orderer.org, "Admin") / "tls"  # each orderer's own organisation administers it
        cmd = [
            self._bin("osnadmin"),
            *args,
            "-o",
            f"127.0.0.1:{orderer.admin_port}",
            "--ca-file",
            str(lay.tls_ca(orderer.org)),
            "--client-cert",
            str(admin / "client.crt"),
            "--client-key",
            str(admin / "client.key"),
        ]
        deadline = time.monotonic() + 60  # the admin endpoint opens after /healthz, once channels are loaded
        while True:
            proc = subprocess.run(cmd, env=self._base_env(), capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline or "already exists" in proc.stdout + proc.stderr:
                why = (proc.stderr + proc.stdout).strip() or f"exit code {proc.returncode}"
                raise NetworkError(f"osnadmin {' '.join(args[:2])} on {orderer.name} failed: {why}")
            time.sleep(0.3)

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
        it signed by the admins of a majority of the orderer organisations (the Orderer group's
        ``MAJORITY Admins``: one under Raft, three of four under BFT); returns once the Hospitals peer
        committed the new config block."""
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
            signers = lay.orderer_orgs[: len(lay.orderer_orgs) // 2 + 1]
            for org in signers:
                admin = {
                    **self.admin_env("Hospitals"),
                    "CORE_PEER_LOCALMSPID": lay.msp_id(org),
                    "CORE_PEER_MSPCONFIGPATH": str(lay.user_dir(org, "Admin") / "msp"),
                }
                if org != signers[-1]:
                    self._run_tool("peer", ["channel", "signconfigtx", "-f", str(t / "env.pb")], admin)
                    continue
                argv = ["channel", "update", "-f", str(t / "env.pb"), "-c", channel, *self.orderer_args()]
                self._run_tool("peer", argv, admin)
            before = common_pb2.Block.FromString((t / "config.block").read_bytes()).header.number
            deadline = time.monotonic() + 60  # accepted is not ordered: a BFT follower forwards it to the leader
            while True:
                self.peer_cli("Hospitals", ["channel", "fetch", "config", str(t / "now.block"), "-c", channel])
                if common_pb2.Block.FromString((t / "now.block").read_bytes()).header.number > before:
                    return
                if time.monotonic() > deadline:
                    raise NetworkError(f"the config update of {channel} was accepted but not committed within 60 s")
                time.sleep(0.3)

    def set_batch_timeout(self, channel: str, timeout: str) -> None:
        """Set ``channel``'s ``Orderer/BatchTimeout`` (e.g. ``"300ms"``) through a config update."""

        def edit(config: dict[str, Any]) -> None:
            config["channel_group"]["groups"]["Orderer"]["values"]["BatchTimeout"]["value"]["timeout"] = timeout

        self.update_channel_config(channel, edit)
