"""Capture Fabric evidence vectors from a real network: a bundle whose three Fabric anchors verify
against the trust file captured with it, and the record it covers.

    python proof_spec/tools/capture_fabric_vectors.py [OUT_DIR]   (default: proof_spec/vectors/fabric)

Brings up a throwaway network and service, stamps one record, saves ``bundle.json``,
``trust.json``, ``ledger-key.pub.json`` and ``record.json``, and stops everything. The files are
captured, not generated: each run gives new keys and certificates (the tests only need them to be
consistent with each other).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "loadtest"))
sys.path.insert(0, str(ROOT))

from loadclient import local_server

from receipt_service.client import ReceiptClient
from receipt_service.fabric.network import Network, free_base_port
from receipt_verifier.fabric.trust import make_trust

RECORD = b'{"resourceType":"Encounter","status":"finished","subject":"pseudonym-7f3a","reason":"vector"}\n'


async def _stamp(url: str, key: str) -> tuple[dict[str, object], dict[str, object]]:
    import hashlib

    async with ReceiptClient(url, key) as client:
        [item] = await client.submit([hashlib.sha256(RECORD).hexdigest()])
        await client.receipt(item.proof_id, wait="anchored", timeout=60)
        return await client.receipt(item.proof_id, evidence=True), await client.ledger_key()


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "proof_spec" / "vectors" / "fabric"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fabric-vectors-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050))
        try:
            config = net.up(lambda m: print(m, file=sys.stderr))
            with local_server(0.2, "--config", str(config)) as (url, key):
                bundle, ledger_key = asyncio.run(_stamp(url, key))
            trust = make_trust(net.config_blocks().values())
        finally:
            net.down()
    (out / "record.json").write_bytes(RECORD)
    (out / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    (out / "trust.json").write_text(json.dumps(trust, indent=1) + "\n")
    (out / "ledger-key.pub.json").write_text(json.dumps(ledger_key, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
