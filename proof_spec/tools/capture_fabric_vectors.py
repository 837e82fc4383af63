"""Capture Fabric evidence vectors from a real network: a bundle whose three Fabric anchors verify
against the trust file captured with it, the record it covers, and a subject's history bundle whose
window (with its subject-heads commitment) is anchored on the medical-history channel.

    python proof_spec/tools/capture_fabric_vectors.py [OUT_DIR]   (default: proof_spec/vectors/fabric)

Brings up a throwaway network and service, stamps one record, saves ``bundle.json``,
``trust.json``, ``ledger-key.pub.json`` and ``record.json``; then, on a second service with an
owner app and a provider, three records of one subject and their ``history.json`` (its service's
ledger key in ``history-ledger-key.pub.json``); and stops everything. The files are
captured, not generated: each run gives new keys and certificates (the tests only need them to be
consistent with each other).
"""

from __future__ import annotations

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


async def _stamp(url: str, key: str) -> tuple[dict[str, object], dict[str, object]]:
    async with ReceiptClient(url, key) as client:
        [item] = await client.submit([hashlib.sha256(RECORD).hexdigest()])
        await client.receipt(item.proof_id, wait="anchored", timeout=60)
        return await client.receipt(item.proof_id, evidence=True), await client.ledger_key()


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
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "proof_spec" / "vectors" / "fabric"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fabric-vectors-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050))
        try:
            config = net.up(lambda m: print(m, file=sys.stderr))
            with local_server(0.2, "--config", str(config)) as (url, key):
                bundle, ledger_key = asyncio.run(_stamp(url, key))
            history, history_key = _history(config)
            trust = make_trust(net.config_blocks().values())
        finally:
            net.down()
    (out / "record.json").write_bytes(RECORD)
    (out / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    (out / "trust.json").write_text(json.dumps(trust, indent=1) + "\n")
    (out / "ledger-key.pub.json").write_text(json.dumps(ledger_key, indent=1) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    (out / "history-ledger-key.pub.json").write_text(json.dumps(history_key, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
