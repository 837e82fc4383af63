"""Catch-up of chained windows after an orderer outage: windows per second once the orderers are back.

Brings up its own SmartBFT network, then for each ``chain_batch`` setting (default 32 and 1, side by
side in one run) starts a service with 1 s windows on a lane of its own, posts a hash every 0.2 s
while every orderer is stopped for ``--outage`` seconds (one window closes per second and waits),
starts the orderers again and times how long the backlog takes to be anchored on all three channels.
Prints one table; the network is stopped at the end.

    python benchmarks/chain_catchup.py [--outage 600] [--batches 32,1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from receipt_service.fabric.network import Network, free_base_port

from _common import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import local_server


def _config(base: Path, batch: int, out: Path) -> Path:
    """The network's service config with its own lane prefix and ``chain_batch``."""
    text = base.read_text().replace(
        "[fabric]\n", f'[fabric]\nchain_prefix = "catchup-{secrets.token_hex(3)}"\nchain_batch = {batch}\n', 1
    )
    out.write_text(text)
    return out


async def _post(http: aiohttp.ClientSession, auth: dict[str, str]) -> str:
    async with http.post("/hashes", json={"hashes": [os.urandom(32).hex()]}, headers=auth) as resp:
        body = await resp.json()
        return str(body["hashes"][0]["proof_id"])


async def _anchored(
    http: aiohttp.ClientSession, auth: dict[str, str], proof_id: str, timeout: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"/proofs/{proof_id}", params={"wait": "anchored", "timeout": "30"}, headers=auth) as r:
            doc: dict[str, object] = await r.json()
        if doc.get("state") == "anchored" or time.monotonic() > deadline:
            return doc


def _window_id(doc: dict[str, object]) -> str:
    tree = doc.get("tree")
    return str(tree.get("window_id")) if isinstance(tree, dict) else "?"


async def _run(net: Network, url: str, key: str, outage: float) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as http:
        first = await _anchored(http, auth, await _post(http, auth), 60)  # the chain has started
        assert first.get("state") == "anchored", first
        for o in net.layout.orderers:
            net.stop(o.name)
        ids: list[str] = []
        t0 = time.monotonic()
        while (left := outage - (time.monotonic() - t0)) > 0:
            ids.append(await _post(http, auth))
            if len(ids) % 300 == 0:
                print(f"  outage: {len(ids)} hashes posted, {left:.0f} s left", file=sys.stderr)
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # the last window closes
        print("  orderers back", file=sys.stderr)
        await asyncio.to_thread(net.up)
        back = time.monotonic()
        last = await _anchored(http, auth, ids[-1], 3600)
        took = time.monotonic() - back
        assert last.get("state") == "anchored", last
        docs = [await _anchored(http, auth, i, 60) for i in ids]
        assert all(d.get("state") == "anchored" for d in docs)
        windows = len({_window_id(d) for d in docs})
    return {"windows": windows, "seconds": took, "rate": windows / took}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outage", type=float, default=600.0, help="seconds every orderer is down (default 600)")
    p.add_argument("--batches", default="32,1", help="chain_batch settings to compare, one after the other")
    args = p.parse_args()
    os.environ["RECEIPT_SERVICE_ANCHOR_RETRY_MAX_SECONDS"] = "1"  # measure the chain, not the retry backoff
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="catchup-bench-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050), "bft")
        try:
            print("fabric up", file=sys.stderr)
            config = net.up(lambda m: print("  " + m, file=sys.stderr))
            for batch in (int(b) for b in args.batches.split(",")):
                print(f"chain_batch {batch}: {args.outage:.0f} s outage", file=sys.stderr)
                cfg = _config(config, batch, Path(tmp) / f"service-{batch}.toml")
                with local_server(1.0, "--config", str(cfg)) as (url, key):
                    results[batch] = asyncio.run(_run(net, url, key, args.outage))
        finally:
            net.down()
    base = results[min(results)]["rate"]
    head = ["chain_batch", "backlog (windows per lane)", "catch-up after orderers back", "windows/s per lane", "vs 1"]
    rows = [
        [str(b), f"{r['windows']:.0f}", f"{r['seconds']:.1f} s", f"{r['rate']:.1f}", f"{r['rate'] / base:.1f}x"]
        for b, r in results.items()
    ]
    print(f"outage {args.outage:.0f} s, 1 s windows, one lane on three channels (SmartBFT)")
    print(markdown_table(head, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
