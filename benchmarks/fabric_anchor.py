"""Fabric anchoring figures: `fabric up` cold and warm, idle cost of the network, anchors per second
per channel and on three channels at once, and submit-to-anchored latency through the service.

Brings up its own network in a temporary directory (Fabric's programs come from the build cache, or
are built first), prints one table, and stops the network. Everything runs on this machine.

    python benchmarks/fabric_anchor.py [--roots 300] [--concurrency 50] [--seconds 10] [--consensus bft,raft]

SmartBFT (four orderers of four organisations) and Raft (three of one) are measured one after the
other in the same run and printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from receipt_service.config import load_settings
from receipt_service.fabric.gateway import GatewayClient
from receipt_service.fabric.network import CHANNELS, Network, free_base_port
from receipt_service.server import fabric_client

from _common import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
from loadclient import local_server, run_anchored

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_rss(pids: list[int]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / CLK
        rss += int(fields[21]) * PAGE
    return cpu, rss


async def _anchor(client: GatewayClient, channel: str, n: int, concurrency: int) -> list[float]:
    """n AnchorRoot transactions on one channel, ``concurrency`` in flight; latency of each."""
    latencies: list[float] = []
    todo = list(range(n))
    tag = os.urandom(4).hex()

    async def worker() -> None:
        while todo:
            i = todo.pop()
            t0 = time.perf_counter()
            args = [f"bench-{tag}/{i}", os.urandom(32).hex(), "1000", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]
            await client.submit(channel, "anchor", "AnchorRoot", args)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def _throughput(net: Network, roots: int, concurrency: int) -> list[list[str]]:
    settings = load_settings(net.layout.root / "receipt-service.toml", environ={})
    assert settings.fabric is not None
    client = fabric_client(settings.fabric)
    rows = []
    try:
        await _anchor(client, CHANNELS[0], 20, 10)  # warm up connections and the chaincode
        t0 = time.perf_counter()
        lat = await _anchor(client, CHANNELS[0], roots, concurrency)
        one = time.perf_counter() - t0
        rows.append(
            [
                "anchors/s, one channel",
                f"{roots / one:,.0f}",
                f"p50 {_pct(lat, 0.5):.3f} s, p99 {_pct(lat, 0.99):.3f} s",
            ]
        )
        print(f"  one channel: {roots} anchors in {one:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        lats = await asyncio.gather(*(_anchor(client, ch, roots, concurrency) for ch in CHANNELS))
        three = time.perf_counter() - t0
        every = [x for lat in lats for x in lat]
        rows.append(
            [
                "anchors/s, three channels at once (total)",
                f"{3 * roots / three:,.0f} ({roots / three:,.0f} per channel)",
                f"p50 {_pct(every, 0.5):.3f} s, p99 {_pct(every, 0.99):.3f} s",
            ]
        )
        print(f"  three channels: {3 * roots} anchors in {three:.1f} s", file=sys.stderr)
    finally:
        await client.close()
    return rows


def _measure(consensus: str, args: argparse.Namespace) -> list[list[str]]:
    """Every figure on a new network of this consensus: [figure, value, detail] rows."""
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="fabric-bench-") as tmp:
        net = Network(Path(tmp) / "net", free_base_port(17050), consensus)
        try:
            print(f"[{consensus}] fabric up (cold: new crypto, channels, chaincode; programs cached)", file=sys.stderr)
            t0 = time.perf_counter()
            config = net.up(lambda m: print("  " + m, file=sys.stderr))
            rows.append(["fabric up, cold (new network)", f"{time.perf_counter() - t0:.1f} s", "binaries cached"])
            t0 = time.perf_counter()
            net.up()
            rows.append(["fabric up, warm (network running)", f"{time.perf_counter() - t0:.1f} s", "checks only"])

            pids = [pid for n in net.layout.nodes if (pid := net.pid(n)) is not None]
            time.sleep(3)
            print(f"[{consensus}] idle for {args.idle_seconds:.0f} s", file=sys.stderr)
            c0, _ = _cpu_rss(pids)
            time.sleep(args.idle_seconds)
            c1, rss = _cpu_rss(pids)
            rows.append(
                [
                    f"idle network ({len(net.layout.orderers)} orderers, 2 peers, chaincode)",
                    f"{100 * (c1 - c0) / args.idle_seconds:.1f} % of one core",
                    f"{rss / 2**20:,.0f} MiB RSS",
                ]
            )

            print(
                f"[{consensus}] anchoring through the Gateway (AnchorRoot: the ordering service's pace)",
                file=sys.stderr,
            )
            rows += asyncio.run(_throughput(net, args.roots, args.concurrency))

            print(f"[{consensus}] service: submit then wait=anchored, {args.seconds:.0f} s", file=sys.stderr)
            with local_server(1.0, "--config", str(config)) as (url, key):
                res = asyncio.run(run_anchored(url, key, args.seconds, 50))
            rows.append(
                [
                    "submit to anchored on all channels (chained windows), window 1 s, 50 clients",
                    f"p50 {res.pct(res.anchored, 0.5) / 1000:.3f} s",
                    f"p99 {res.pct(res.anchored, 0.99) / 1000:.3f} s ({len(res.anchored)} receipts, {res.errors} errors)",
                ]
            )
            c2, rss2 = _cpu_rss(pids)
            rows.append(["network CPU for the whole run", f"{c2 - c0:.1f} CPU-s", f"{rss2 / 2**20:,.0f} MiB RSS after"])
        finally:
            net.down()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--roots", type=int, default=300, help="AnchorRoot transactions per channel")
    p.add_argument("--concurrency", type=int, default=50, help="transactions in flight per channel")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the service latency phase")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--consensus", default="bft,raft", help="networks to measure, one after the other")
    args = p.parse_args()
    kinds = args.consensus.split(",")
    measured = {kind: _measure(kind, args) for kind in kinds}
    head = ["figure", *(f"{kind}: {col}" for kind in kinds for col in ("value", "detail"))]
    rows = [
        [row[0].replace("(4 orderers", "(orderers").replace("(3 orderers", "(orderers"), *cells]
        for row, cells in zip(
            measured[kinds[0]],
            ([c for kind in kinds for c in measured[kind][i][1:]] for i in range(len(measured[kinds[0]]))),
            strict=True,
        )
    ]
    print(markdown_table(head, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
