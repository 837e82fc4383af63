"""Capture Fabric evidence vectors from a real network: a bundle whose three Fabric anchors verify
against the trust file captured with it, the record it covers, a subject's history bundle whose
window (with its subject-heads commitment) is anchored on the medical-history channel, a bundle
anchored after a channel config update, and the network's keys to forge tampered blocks with.

    python proof_spec/tools/capture_fabric_vectors.py [OUT_DIR] [--consensus raft|bft]

The default is Raft into ``proof_spec/vectors/fabric``; ``--consensus bft`` captures from four SmartBFT
orderers of four organisations into ``proof_spec/vectors/fabric-bft``.

Brings up a throwaway network and service, stamps one record, saves ``bundle.json``,
``trust.json``, ``ledger-key.pub.json`` and ``record.json``; then, on a second service with an
owner app and a provider, three records of one subject and their ``history.json`` (its service's
ledger key in ``history-ledger-key.pub.json``); then changes personal-health's BatchTimeout through a
config update and stamps another record, whose anchor on that channel is made under the newer config
(``bundle-newer-config.json``; ``trust.json`` still pins the genesis config); saves the network's
signing keys for the tamper tests (``forge-keys.json``); and stops everything. The files are
captured, not generated: each run gives new keys and certificates (the tests only need them to be
consistent with each other).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "loadtest"))
sys.path.insert(0, str(ROOT))

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from loadclient import CLI, _wait_for_port, local_server

from receipt_service.client import ReceiptClient
from receipt_service.fabric.network import Network, free_base_port
from receipt_verifier.access_event import public_jwk
from receipt_verifier.fabric.trust import make_trust

RECORD = b'{"resourceType":"Encounter","status":"finished","subject":"pseudonym-7f3a","reason":"vector"}\n'
RECORD_AFTER_UPDATE = b'{"resourceType":"Encounter","status":"finished","reason":"after a config update"}\n'
NEWER_CONFIG_CHANNEL = "personal-health"


async def _stamp(url: str, key: str, record: bytes) -> tuple[dict[str, Any], dict[str, object]]:
    async with ReceiptClient(url, key) as client:
        [item] = await client.submit([hashlib.sha256(record).hexdigest()])
        await client.receipt(item.proof_id, wait="anchored", timeout=60)
        return await client.receipt(item.proof_id, evidence=True), await client.ledger_key()


def _signer(msp_id: str, msp_dir: Path) -> dict[str, str]:
    """An identity of the throwaway network: MSP id, certificate and private key (PEM)."""
    cert = next((msp_dir / "signcerts").glob("*.pem")).read_text()
    return {"msp_id": msp_id, "cert": cert, "key": next((msp_dir / "keystore").iterdir()).read_text()}


def _forge_keys(net: Network) -> dict[str, Any]:
    """The keys the tamper tests re-sign forged blocks with: every orderer, each org's client and peer."""
    lay = net.layout
    return {
        "note": "private keys of the throwaway network these vectors came from; it no longer exists."
        " Tests use them to re-sign tampered blocks so that each deeper check is reached. Never trust them.",
        "consensus": lay.consensus,
        "orderers": [_signer(lay.msp_id(o.org), lay.node_dir(o) / "msp") for o in lay.orderers],
        "clients": {p.org: _signer(f"{p.org}MSP", lay.user_dir(p.org, "User1") / "msp") for p in lay.peers},
        "peers": {p.org: _signer(f"{p.org}MSP", lay.node_dir(p) / "msp") for p in lay.peers},
    }


def _newer_config_block(bundle: dict[str, Any], channel: str) -> int:
    """The config block number the bundle's ``channel`` anchor was made under (its evidence includes it)."""
    anchors = [a for op in bundle["receipt"]["branches"][0]["ops"] for a in op.get("anchors", [])]
    anchor = next(a for a in anchors if a.get("channel") == channel)
    numbers = [b["number"] for b in bundle["fabric_blocks"] if b["channel"] == channel]
    newer = [n for n in numbers if n != anchor["block_number"]]
    if not newer or newer[0] == 0:
        raise SystemExit(f"the {channel} anchor was not made under the updated config: blocks {numbers}")
    return int(newer[0])


HISTORY_SUBJECT = "did:example:patient-vector-01"


def _history(config: Path) -> tuple[dict[str, object], dict[str, object]]:
    """Three records of one subject in medical-history, anchored locally and on Fabric; its history bundle."""
    with tempfile.TemporaryDirectory(prefix="fabric-history-") as tmp:

        def key(role: str, tenant: str) -> str:
            argv = [*CLI, "keys", "create", "--tenant", tenant, "--role", role, "--data-dir", tmp]
            return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

        app, clinic = key("owner-app", "wearco"), key("provider", "clinic")
        argv = [*CLI, "serve", "--data-dir", tmp, "--port", "0", "--window-seconds", "0.2", "--config", str(config)]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            url = _wait_for_port(proc)

            async def calls() -> tuple[Any, Any]:
                async def call(token: str, method: str, path: str, body: object = None) -> Any:
                    async with (
                        aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"}) as http,
                        http.request(method, path, json=body) as resp,
                    ):
                        assert resp.status < 300, await resp.text()
                        return await resp.json()

                jwk = public_jwk(Ed25519PrivateKey.generate().public_key())
                await call(app, "POST", "/signing-keys", {"jwk": jwk, "subject": HISTORY_SUBJECT})
                texts = [f"treatment record {i} of the history vector".encode() for i in range(3)]
                body = {"hashes": [hashlib.sha256(t).hexdigest() for t in texts], "subject": HISTORY_SUBJECT}
                ack = await call(clinic, "POST", "/hashes", body)
                for item in ack["hashes"]:
                    receipt = await call(clinic, "GET", f"/proofs/{item['proof_id']}?wait=anchored&timeout=60")
                    assert receipt["state"] == "anchored", receipt
                bundle = await call(app, "GET", f"/subjects/{HISTORY_SUBJECT}/history?domain=medical-history")
                return bundle, await call(app, "GET", "/ledger/key")

            return asyncio.run(calls())
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description="capture Fabric evidence vectors from a throwaway network")
    parser.add_argument("out", nargs="?", type=Path, help="output directory")
    parser.add_argument("--consensus", choices=["raft", "bft"], default="raft")
    args = parser.parse_args()
    out = args.out or ROOT / "proof_spec" / "vectors" / ("fabric" if args.consensus == "raft" else "fabric-bft")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fabric-vectors-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050), args.consensus)
        try:
            config = net.up(lambda m: print(m, file=sys.stderr))
            with local_server(0.2, "--config", str(config)) as (url, key):
                bundle, ledger_key = asyncio.run(_stamp(url, key, RECORD))
                history, history_key = _history(config)
                trust = make_trust(net.config_blocks().values())  # pins each channel's genesis config
                net.set_batch_timeout(NEWER_CONFIG_CHANNEL, "300ms")
                newer, _ = asyncio.run(_stamp(url, key, RECORD_AFTER_UPDATE))
            print(f"newer config: block {_newer_config_block(newer, NEWER_CONFIG_CHANNEL)}", file=sys.stderr)
            forge_keys = _forge_keys(net)
        finally:
            net.down()
    (out / "record.json").write_bytes(RECORD)
    (out / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    (out / "trust.json").write_text(json.dumps(trust, indent=1) + "\n")
    (out / "ledger-key.pub.json").write_text(json.dumps(ledger_key, indent=1) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    (out / "history-ledger-key.pub.json").write_text(json.dumps(history_key, indent=1) + "\n")
    (out / "bundle-newer-config.json").write_text(json.dumps(newer, indent=1) + "\n")
    (out / "forge-keys.json").write_text(json.dumps(forge_keys, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
