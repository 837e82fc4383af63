"""Verified Fabric anchors per second, offline, with evidence: blocks shared by many receipts are
checked once and cached (warm), against a verifier that has seen nothing (cold, and one receipt per
fresh verifier: the cost of a block and transaction checked from scratch).

Brings up its own network and service in a temporary directory, posts hashes, fetches the receipts
and each distinct block once, then verifies on one core. Prints one table.

    python benchmarks/verify_fabric.py [--hashes 20000] [--fresh 50] [--keep DIR] [--compare CHECKOUT]

``--keep DIR`` saves the receipts, blocks, key and trust file there on the first run and reuses them
(no network) on the next. Receipts are kept as the service serves them (compact JSON: the verifier's
text path); the table also shows them re-serialised with spaces (decoded, then checked).
``--compare CHECKOUT`` (needs ``--keep``) measures the warm pass of another checkout's verifier on the
same evidence in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from receipt_service.fabric.network import Network, free_base_port
from receipt_verifier import Verifier
from receipt_verifier.fabric.trust import load_trust, make_trust
from receipt_verifier.ledger import load_public_key
from receipt_verifier.verify import AnchorStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import local_server

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def _receipts(url: str, key: str, n: int) -> tuple[list[bytes], dict[tuple[str, int], bytes], bytes]:
    auth = {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    async with aiohttp.ClientSession(url, headers=auth) as http:
        for i in range(0, n, 1000):
            hashes = [os.urandom(32).hex() for _ in range(min(1000, n - i))]
            async with http.post("/hashes", json={"hashes": hashes}) as resp:
                ids += [h["proof_id"] for h in (await resp.json())["hashes"]]
            await asyncio.sleep(0.5)  # spread over windows: several trees, several blocks
        async with http.get(f"/proofs/{ids[-1]}", params={"wait": "anchored", "timeout": "60"}) as resp:
            assert (await resp.json())["state"] == "anchored"
        docs: list[bytes] = []
        for i in range(0, len(ids), 250):
            async with http.get("/proofs", params={"ids": ",".join(ids[i : i + 250])}) as resp:
                docs += [json.dumps(r, separators=(",", ":")).encode() for r in (await resp.json())["receipts"]]
        blocks: dict[tuple[str, int], bytes] = {}
        for doc in docs:
            for op in json.loads(doc)["branches"][0]["ops"]:
                for a in op.get("anchors", []):
                    if a["type"] == "fabric":
                        for num in (a["block_number"], 0):
                            if (a["channel"], num) not in blocks:
                                async with http.get(f"/fabric/{a['channel']}/blocks/{num}") as resp:
                                    blocks[(a["channel"], num)] = await resp.read()
        async with http.get("/ledger/key") as resp:
            key_doc = await resp.read()
    return docs, blocks, key_doc


def _pass(verifier: Verifier, docs: list[bytes], blocks: dict[tuple[str, int], bytes]) -> tuple[float, int]:
    t0 = time.perf_counter()
    anchors = 0
    for doc in docs:
        result = verifier.verify(doc, blocks=blocks)
        fabric = [a for a in result.anchors if a.type == "fabric"]
        assert all(a.status is AnchorStatus.VERIFIED for a in fabric), fabric
        anchors += len(fabric)
    return time.perf_counter() - t0, anchors


# The warm pass, measured by another checkout's verifier through the public API only.
_OTHER = """
import json, sys, time
from pathlib import Path
from receipt_verifier import Verifier
from receipt_verifier.fabric.trust import load_trust
from receipt_verifier.ledger import load_public_key
folder = Path(sys.argv[1])
blocks = {}
for f in (folder / "blocks").iterdir():
    channel, number, _ = f.name.rsplit(".", 2)
    blocks[(channel, int(number))] = f.read_bytes()
docs = (folder / "receipts.jsonl").read_bytes().split(b"\\n")
v = Verifier([load_public_key((folder / "key.json").read_bytes())], fabric_trust=load_trust((folder / "trust.json").read_bytes()))
def once():
    t, n = time.perf_counter(), 0
    for d in docs:
        n += sum(a.type == "fabric" and a.status.value == "verified" for a in v.verify(d, blocks=blocks).anchors)
    return n, n / (time.perf_counter() - t)
once()
print(json.dumps(max(once() for _ in range(3))))
"""


def _fetch(hashes: int) -> tuple[list[bytes], dict[tuple[str, int], bytes], bytes, bytes]:
    with tempfile.TemporaryDirectory(prefix="verify-fabric-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050))
        try:
            print("bringing up the network and the service", file=sys.stderr)
            config = net.up()
            with local_server(1.0, "--config", str(config)) as (url, key):
                docs, blocks, key_doc = asyncio.run(_receipts(url, key, hashes))
            trust_doc = json.dumps(make_trust(net.config_blocks().values())).encode()
        finally:
            net.down()
    return docs, blocks, key_doc, trust_doc


def _save(
    folder: Path, docs: list[bytes], blocks: dict[tuple[str, int], bytes], key_doc: bytes, trust_doc: bytes
) -> None:
    (folder / "blocks").mkdir(parents=True, exist_ok=True)
    (folder / "receipts.jsonl").write_bytes(b"\n".join(docs))
    for (channel, number), data in blocks.items():
        (folder / "blocks" / f"{channel}.{number}.block").write_bytes(data)
    (folder / "key.json").write_bytes(key_doc)
    (folder / "trust.json").write_bytes(trust_doc)


def _load(folder: Path) -> tuple[list[bytes], dict[tuple[str, int], bytes], bytes, bytes]:
    blocks = {}
    for f in (folder / "blocks").iterdir():
        channel, number, _ = f.name.rsplit(".", 2)
        blocks[(channel, int(number))] = f.read_bytes()
    docs = (folder / "receipts.jsonl").read_bytes().split(b"\n")
    return docs, blocks, (folder / "key.json").read_bytes(), (folder / "trust.json").read_bytes()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hashes", type=int, default=20_000)
    p.add_argument("--fresh", type=int, default=50, help="receipts verified each by a new verifier")
    p.add_argument("--keep", type=Path, help="save the evidence here, or reuse it when present")
    p.add_argument("--compare", type=Path, help="another checkout of the repository (with --keep)")
    args = p.parse_args()
    if args.compare is not None and args.keep is None:
        p.error("--compare needs --keep (the other checkout reads the kept evidence)")
    docs, blocks, key_doc, trust_doc = (
        _load(args.keep) if args.keep and (args.keep / "trust.json").exists() else _fetch(args.hashes)
    )
    if args.keep and not (args.keep / "trust.json").exists():
        _save(args.keep, docs, blocks, key_doc, trust_doc)
    keys = [load_public_key(key_doc)]
    trust = load_trust(trust_doc)
    trees = len({json.loads(d)["tree"]["window_id"] + str(json.loads(d)["tree"]["tree_index"]) for d in docs})
    print(f"{len(docs)} receipts from {trees} trees, {len(blocks)} distinct blocks; verifying", file=sys.stderr)
    rows: list[list[Any]] = []
    verifier = Verifier(keys, fabric_trust=trust)
    cold, n = _pass(verifier, docs, blocks)
    rows.append(["cold: a new verifier, every block and tx checked once", n, n / cold])
    warm, n = min(_pass(verifier, docs, blocks) for _ in range(3))
    rows.append(["warm: blocks and txs cached (best of 3)", n, n / warm])
    spaced = [json.dumps(json.loads(d)).encode() for d in docs]
    warm_spaced, n = min(_pass(verifier, spaced, blocks) for _ in range(3))
    rows.append(["warm, receipts re-serialised with spaces (decoded first)", n, n / warm_spaced])
    t0 = time.perf_counter()
    fresh = 0
    for doc in docs[: args.fresh]:
        fresh += _pass(Verifier(keys, fabric_trust=trust), [doc], blocks)[1]
    per = time.perf_counter() - t0
    rows.append([f"from scratch: a new verifier per receipt ({args.fresh} receipts)", fresh, fresh / per])
    if args.compare is not None:
        print(f"measuring {args.compare}", file=sys.stderr)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.compare / "verifier" / "src"), str(args.compare)])}
        out = subprocess.run(
            [sys.executable, "-c", _OTHER, str(args.keep)], env=env, check=True, capture_output=True, text=True
        )
        n, rate = json.loads(out.stdout)
        rows.append([f"{args.compare}: warm (best of 3)", n, rate])
    print("| mode | Fabric anchors | anchors/s (one core) |")
    print("|---|---|---|")
    for name, count, rate in rows:
        print(f"| {name} | {count:,} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
