"""``receipt-service``: serve, manage API keys, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from receipt_verifier import AnchorPolicy, Verifier, dumps, parse_receipt
from receipt_verifier._progress import table
from receipt_verifier.errors import Error
from receipt_verifier.ledger import load_public_key

from .auth import make_key, parse_scopes
from .config import ENV_PREFIX, Settings, load_settings
from .demo_paper import run_paper
from .domains import ROLES, parse_role
from .server import DEFAULT_KEY_FILE, WorkerLink, open_key_store, serve
from .supervisor import supervise

SAMPLE_RECORDS: list[tuple[str, bytes]] = [
    ("wearable: heart rate", b'{"type":"heart_rate","bpm":72,"device":"wrist-01"}'),
    ("wearable: steps", b'{"type":"steps","count":1043,"device":"wrist-01"}'),
    ("wearable: SpO2", b'{"type":"spo2","percent":97,"device":"ring-07"}'),
    ("wearable: sleep", b'{"type":"sleep","minutes":431,"device":"ring-07"}'),
    ("clinic: treatment note", b'{"type":"treatment_note","text":"amoxicillin 500 mg, 7 days"}'),
    ("clinic: lab result", b'{"type":"lab","test":"HbA1c","value":"5.4%"}'),
    ("insurer: claim", b'{"type":"insurance_claim","claim":"C-2025-1107","amount_eur":180}'),
]


# ---------------------------------------------------------------------- demo


async def _demo(data_dir: Path, keep: bool) -> int:
    settings = load_settings(overrides={"data_dir": data_dir, "port": 0, "host": "127.0.0.1"})
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(settings, ready=port.set_result, stop=stop))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(asyncio.shield(port), 30)}"
        token = (data_dir / DEFAULT_KEY_FILE).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        print(f"service up at {base} (data dir {data_dir}); posting {len(SAMPLE_RECORDS)} record hashes")
        async with aiohttp.ClientSession(base, headers=headers) as http:
            hashes = [hashlib.sha256(record).hexdigest() for _, record in SAMPLE_RECORDS]
            t0 = time.perf_counter()
            async with http.post("/hashes", json={"hashes": hashes}) as resp:
                ack = await _ok(resp)
            acked = time.perf_counter() - t0

            async def fetch(proof_id: str) -> bytes:
                async with http.get(f"/proofs/{proof_id}", params={"wait": "anchored", "timeout": "30"}) as resp:
                    await _ok(resp, parse=False)
                    return await resp.read()

            bodies = await asyncio.gather(*(fetch(item["proof_id"]) for item in ack["hashes"]))
            anchored = time.perf_counter() - t0
            async with http.get("/ledger/key") as resp:
                key_doc = await resp.read()
        verifier = Verifier([load_public_key(key_doc)])
        out = data_dir / "receipts"
        out.mkdir(exist_ok=True)
        rows = []
        for (label, record), body in zip(SAMPLE_RECORDS, bodies, strict=True):
            receipt = parse_receipt(body)
            (out / f"{receipt.proof_id}.json").write_text(dumps(receipt))
            result = verifier.verify_policy(body, AnchorPolicy(), record=record)
            status = ", ".join(f"{a.type} {a.status.value}" for a in result.anchors)
            rows.append([label, receipt.proof_id, receipt.hash[:16] + "…", receipt.state, status])
        print(table(["record", "proof_id", "hash", "state", "anchor (checked offline)"], rows))
        pinned = data_dir / "ledger-key.pub.json"
        pinned.write_bytes(key_doc)
        print(f"\nacknowledged in {acked * 1000:.0f} ms; all {len(rows)} receipts anchored after {anchored:.2f} s")
        if keep:
            tool = Path(sys.executable).parent / "receipt-verify"
            print(f"check them again offline: {tool} {out} --ledger-key {pinned}")
        print("the paper's owner/clinic/insurer story with access events: ./run demo --scenario paper")
        return 0
    finally:
        stop.set()
        await server


def _demo_fabric(args: argparse.Namespace) -> int:
    """``demo --fabric``: a network up (Fabric's programs built once and cached), the paper's story anchored
    on its three channels, the insurer's offline checks under a trust file of the channels' config blocks as
    ``peer channel fetch config`` gives them; the network down again unless ``--keep``."""
    import secrets

    from receipt_verifier.fabric.trust import make_trust

    from .fabric.network import Network, free_base_port

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="receipt-demo-")))
        root = args.fabric_dir or (Path("fabric-net") if args.keep else tmp / "fabric-net")  # kept: where status looks
        net = Network(root, None if (root / "network.json").exists() else free_base_port())
        t0 = time.perf_counter()
        try:
            config = net.up(progress)
            trust = make_trust(net.config_blocks().values())  # what `peer channel fetch config` answers
            print(
                f"network up in {time.perf_counter() - t0:.1f} s ({net.layout.consensus}); trust file of"
                f" {len(trust['channels'])} channels' config blocks"
            )
            demo_config = tmp / "service.toml"  # its own lanes on the channels: a demo may run again on one network
            text = config.read_text().replace(
                "[fabric]\n", f'[fabric]\nchain_prefix = "demo-{secrets.token_hex(3)}"\n', 1
            )
            demo_config.write_text(text)
            data = args.data_dir or tmp / "data"
            data.mkdir(parents=True, exist_ok=True)
            return asyncio.run(run_paper(data, config=demo_config, trust=trust))
        finally:
            if args.keep:
                print(f"network kept running: receipt-service fabric status --dir {root}")
            else:
                stopped = net.down()
                print(f"network down ({len(stopped)} processes stopped)")


async def _ok(resp: aiohttp.ClientResponse, parse: bool = True) -> Any:
    if resp.status >= 300:
        raise DemoError(f"{resp.method} {resp.url.path} answered {resp.status}: {await resp.text()}")
    return await resp.json() if parse else None


class DemoError(Error):
    """The demo's service call failed."""


# ---------------------------------------------------------------------- keys


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    store, close = open_key_store(settings)
    try:
        if args.keys_command == "create":
            role = parse_role(args.role) if args.role else None
            scope = args.scope or ("read" if role == "auditor" else "submit,read")
            key = make_key(args.tenant, parse_scopes(scope), role)
            store.create_api_key(key.record)
            print(key.token)
            print(
                f"key {key.record.key_id} for tenant {args.tenant} (role {role or 'none: v1 receipts'},"
                f" scopes {','.join(sorted(key.record.scopes))}); the secret is shown only now",
                file=sys.stderr,
            )
            return 0
        if args.keys_command == "revoke":
            when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if not store.revoke_api_key(args.key_id, when):
                print(f"receipt-service: error: no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id} (the service stops accepting it within seconds)")
            return 0
        rows = [
            [
                k.key_id,
                k.tenant,
                k.role or "-",
                ",".join(sorted(k.scopes)),
                k.created,
                f"revoked {k.revoked}" if k.revoked else "active",
            ]
            for k in store.list_api_keys()
        ]
        print(table(["key id", "tenant", "role", "scopes", "created", "state"], rows) if rows else "no keys")
        return 0
    finally:
        close()


# ---------------------------------------------------------------------- fabric


def _fabric(args: argparse.Namespace) -> int:
    from .fabric.network import Network, iter_env_lines

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.fabric_command == "up":
        net = Network(args.dir, args.base_port, args.consensus)
        print(net.up(progress))
        return 0
    net = Network(args.dir)
    if args.fabric_command == "down":
        stopped = net.down(wipe=args.wipe)
        print(f"stopped {len(stopped)} process(es): {', '.join(stopped) or 'none running'}", file=sys.stderr)
        return 0
    if args.fabric_command == "trust":
        from receipt_verifier.fabric.trust import make_trust

        doc = make_trust(net.config_blocks().values())
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
        for name, ch in doc["channels"].items():
            print(f"{name}: config block {ch['config_block_number']} header hash {ch['config_block_hash']}")
        print(f"wrote {args.output}: publish it; auditors check the header hashes out of band", file=sys.stderr)
        return 0
    if args.fabric_command == "env":
        print("\n".join(iter_env_lines(net.env(args.org))))
        return 0
    st = net.status()
    rows = [
        [n.node.name, n.node.kind, str(n.pid or "-"), str(n.node.port), "ok" if n.healthy else "DOWN", n.detail]
        for n in st.nodes
    ]
    print(table(["process", "kind", "pid", "port", "health", "detail"], rows))
    lay = net.layout
    consenters = [
        [o.name, lay.msp_id(o.org), ", ".join(ch for ch, who in st.leaders.items() if who == o.name) or "-"]
        for o in lay.orderers
    ]
    f = (len(lay.orderers) - 1) // 3 if st.consensus == "bft" else (len(lay.orderers) - 1) // 2
    print(f"ordering: {st.consensus}, {len(lay.orderers)} consenters, tolerates {f} faulty", file=sys.stderr)
    print(table(["consenter", "organisation", "leads"], consenters))
    heights = [[peer, *(str(h) for h in per.values())] for peer, per in st.heights.items()]
    channels = next(iter(st.heights.values()), {})
    print(table(["peer", *(f"{ch} height" for ch in channels)], heights))
    print("healthy" if st.healthy else "NOT healthy", file=sys.stderr)
    return 0 if st.healthy else 1


# ---------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receipt-service",
        description="Anchoring and proof-receipt service for health-record hashes.",
        epilog=f"Settings come from defaults, then --config FILE (TOML), then {ENV_PREFIX}* variables, then flags.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML file with a [service] table")
    common.add_argument("--data-dir", type=Path, help="database, ledger and keys live here (default ./receipt-data)")
    common.add_argument(
        "--store",
        help="sqlite (default: files in the data directory), redis://HOST:PORT/DB or redis+cluster://HOST:PORT",
    )

    s = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    s.add_argument("--host", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default 8080; 0 picks a free one)")
    s.add_argument("--window-seconds", type=float, help="aggregation window (default 1.0)")
    s.add_argument("--max-leaves", type=int, help="leaves per tree before a window splits (default 25000)")
    s.add_argument("--retention-days", type=float, help="drop anchored receipts after this many days (default: keep)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument(
        "--workers",
        type=int,
        help="processes serving the port on the embedded store, watched by this one (default 1: this process)",
    )
    s.add_argument("--worker", help=argparse.SUPPRESS)  # set by the supervisor of --workers for each worker

    k = sub.add_parser("keys", help="manage tenant API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", parents=[common], help="create a key and print it once")
    kc.add_argument("--tenant", required=True, help="the tenant that will own what this key submits")
    kc.add_argument(
        "--role",
        choices=ROLES,
        help="Table I role: what the key may add and read, and the domain of its records (none: v1 receipts)",
    )
    kc.add_argument("--scope", help="comma-separated: submit, read (default both; read for an auditor)")
    kr = ksub.add_parser("revoke", parents=[common], help="revoke a key by its id")
    kr.add_argument("key_id")
    ksub.add_parser("list", parents=[common], help="list keys (never their secrets)")

    f = sub.add_parser("fabric", help="a Fabric network of plain processes on 127.0.0.1 (development, tests)")
    fsub = f.add_subparsers(dest="fabric_command", required=True)
    fdir = argparse.ArgumentParser(add_help=False)
    fdir.add_argument("--dir", type=Path, default=Path("fabric-net"), help="network directory (default ./fabric-net)")
    fu = fsub.add_parser("up", parents=[fdir], help="bring the network up, or check it when it runs")
    fu.add_argument("--base-port", type=int, help="first of 40 consecutive ports (default 7050)")
    fu.add_argument(
        "--consensus",
        choices=["bft", "raft"],
        help="bft (default): SmartBFT on four orderers of four organisations; raft: three of one organisation",
    )
    fsub.add_parser("status", parents=[fdir], help="every process and channel height; exit 0 only when healthy")
    fe = fsub.add_parser("env", parents=[fdir], help="shell exports for Fabric's peer CLI as an org's admin")
    fe.add_argument("--org", required=True, choices=["Hospitals", "Insurers"])
    ft = fsub.add_parser("trust", parents=[fdir], help="write the trust file auditors pin (every channel's config)")
    ft.add_argument("-o", "--output", type=Path, required=True, help="where to write trust.json")
    fd = fsub.add_parser("down", parents=[fdir], help="stop every process 'up' started")
    fd.add_argument("--wipe", action="store_true", help="also delete the network directory")

    d = sub.add_parser("demo", help="start the service, anchor sample health records, verify every receipt")
    d.add_argument("--data-dir", type=Path, help="keep the data here (default: a temporary directory)")
    d.add_argument(
        "--scenario",
        choices=["basic", "paper"],
        default="basic",
        help="basic: anchor sample records; paper: the seed paper's owner/clinic/insurer story with access events",
    )
    d.add_argument(
        "--fabric",
        action="store_true",
        help="the paper's story with every root anchored on the three Fabric channels of a network brought up"
        " for it, and the insurer's offline check of the medical history under a trust file",
    )
    d.add_argument("--keep", action="store_true", help="with --fabric: leave the network running afterwards")
    d.add_argument(
        "--fabric-dir",
        type=Path,
        help="with --fabric: the network directory (default: a temporary one, ./fabric-net with --keep; reused if up)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            if args.fabric:
                return _demo_fabric(args)
            if args.scenario == "paper":
                if args.data_dir is not None:
                    return asyncio.run(run_paper(args.data_dir))
                with tempfile.TemporaryDirectory(prefix="receipt-demo-") as tmp:
                    return asyncio.run(run_paper(Path(tmp)))
            if args.data_dir is not None:
                return asyncio.run(_demo(args.data_dir, keep=True))
            with tempfile.TemporaryDirectory(prefix="receipt-demo-") as tmp:
                return asyncio.run(_demo(Path(tmp), keep=False))
        if args.command == "fabric":
            return _fabric(args)
        config = args.config or (
            Path(os.environ[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in os.environ else None
        )
        overrides: dict[str, Any] = {"data_dir": args.data_dir, "store": args.store}
        if args.command == "keys":
            return _keys(args, load_settings(config, overrides=overrides))
        overrides.update(
            host=args.host,
            port=args.port,
            window_seconds=args.window_seconds,
            max_leaves=args.max_leaves,
            retention_days=args.retention_days,
            workers=args.workers,
        )
        settings = load_settings(config, overrides=overrides)
        if args.worker is not None:  # one of the supervisor's workers
            link = WorkerLink.parse(args.worker)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops its workers in order
            fmt = f"%(asctime)s %(levelname)s worker {link.index} %(name)s: %(message)s"
            logging.basicConfig(level=args.log_level, format=fmt)
            asyncio.run(serve(settings, worker=link))
            return 0
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if settings.workers > 1:
            return supervise(settings, argv)
        asyncio.run(serve(settings))
        return 0
    except Error as exc:
        print(f"receipt-service: error: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"receipt-service: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"receipt-service: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
