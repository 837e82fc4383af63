"""A channel config update on the test network with Fabric's own tools (configtxlator, peer channel
update), as an operator would do it: change the channel's BatchTimeout, signed by the orderer admin."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from receipt_service.fabric.network import Network


def _run(net: Network, argv: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        argv, env={**net._base_env(), **(env or {})}, input=stdin, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{argv[:3]}: {proc.stderr.decode(errors='replace')[-2000:]}"
    return proc.stdout


def set_batch_timeout(net: Network, channel: str, timeout: str) -> None:
    """Update ``channel``'s Orderer/BatchTimeout; returns once the orderer accepted the update."""
    lay = net.layout
    tool = str(net.home / "bin" / "configtxlator") if net.home else "configtxlator"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        net.peer_cli("Hospitals", ["channel", "fetch", "config", str(t / "config.block"), "-c", channel])
        block: dict[str, Any] = json.loads(
            _run(net, [tool, "proto_decode", "--type", "common.Block", "--input", str(t / "config.block")])
        )
        config = block["data"]["data"][0]["payload"]["data"]["config"]
        (t / "old.json").write_text(json.dumps(config))
        config["channel_group"]["groups"]["Orderer"]["values"]["BatchTimeout"]["value"]["timeout"] = timeout
        (t / "new.json").write_text(json.dumps(config))
        for name in ("old", "new"):
            pb = _run(net, [tool, "proto_encode", "--type", "common.Config", "--input", str(t / f"{name}.json")])
            (t / f"{name}.pb").write_bytes(pb)
        compute = [tool, "compute_update", "--channel_id", channel]
        update = _run(net, [*compute, "--original", str(t / "old.pb"), "--updated", str(t / "new.pb")])
        (t / "update.pb").write_bytes(update)
        update_json = json.loads(
            _run(net, [tool, "proto_decode", "--type", "common.ConfigUpdate", "--input", str(t / "update.pb")])
        )
        envelope = {
            "payload": {
                "header": {"channel_header": {"channel_id": channel, "type": 2}},
                "data": {"config_update": update_json},
            }
        }
        (t / "env.json").write_text(json.dumps(envelope))
        env_pb = _run(net, [tool, "proto_encode", "--type", "common.Envelope", "--input", str(t / "env.json")])
        (t / "env.pb").write_bytes(env_pb)
        admin = {
            **net.admin_env("Hospitals"),
            "CORE_PEER_LOCALMSPID": "OrdererMSP",
            "CORE_PEER_MSPCONFIGPATH": str(lay.user_dir("Orderer", "Admin") / "msp"),
        }
        peer = str(net.home / "bin" / "peer") if net.home else "peer"
        _run(net, [peer, "channel", "update", "-f", str(t / "env.pb"), "-c", channel, *net.orderer_args()], env=admin)
