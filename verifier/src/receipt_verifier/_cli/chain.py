"""``receipt-verify chain``: replay a channel's chained windows from its blocks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._progress import Progress, table
from ..audit import render_chain_html
from ..errors import Error, UsageError
from .common import EXIT_INVALID, EXIT_VALID, load_trust_file


def _block_files(paths: list[Path]) -> list[Path]:
    """Block files (``peer channel fetch`` output), directories expanded to the files they hold."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    if not out:
        raise UsageError("no block files found in the given inputs")
    return out


def _read_blocks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        try:
            yield path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def main(argv: list[str]) -> int:
    from ..chain import replay
    from ..fabric.windows import block_info, read_windows

    p = argparse.ArgumentParser(
        prog="receipt-verify chain",
        description="Replay a channel's chained windows (spec 14.7-14.9) from its blocks, offline: every block's"
        " orderer signatures, every AppendWindow's endorsements, sequence, previous hash, time, transition proof"
        " and the successor rule.",
    )
    p.add_argument("blocks", nargs="+", type=Path, metavar="BLOCKS", help="block files (peer channel fetch) or dirs")
    p.add_argument("--trust", type=Path, required=True, metavar="FILE", help="pinned Fabric trust file")
    p.add_argument("--lane", metavar="L", help="only this lane (a domain, or _ for the lane without one)")
    p.add_argument("--chaincode", default="anchor", metavar="NAME", help="the anchor chaincode's name (anchor)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the self-contained HTML report here")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    args = p.parse_args(argv)
    channels = load_trust_file(args.trust)
    files = _block_files(args.blocks)
    numbered: dict[int, Path] = {}
    names: set[str] = set()
    with Progress(len(files), "reading blocks", enabled=(args.progress or None) if len(files) > 50 else False) as bar:
        for path, data in _read_blocks_paths(files):
            try:
                info = block_info(data)
            except Error as exc:
                raise UsageError(f"{path}: not a Fabric block ({exc})") from None
            if info.number in numbered:
                raise UsageError(f"{path} and {numbered[info.number]} are both block {info.number}")
            numbered[info.number] = path
            names.add(info.channel)
            bar.advance()
    if len(names) != 1:
        raise UsageError(f"the blocks belong to channels {', '.join(sorted(names))}: give one channel per run")
    channel = names.pop()
    trust = channels.get(channel)
    if trust is None:
        raise UsageError(f"channel {channel} is not in the trust file {args.trust}")
    ordered = [numbered[n] for n in sorted(numbered)]
    with Progress(len(ordered), "checking blocks", enabled=args.progress or None) as bar:
        found = read_windows(
            _read_blocks(ordered), trust, chaincode=args.chaincode, lane=args.lane, advance=bar.advance
        )
    chain = replay(found.windows)
    doc: dict[str, Any] = {
        "channel": channel,
        "checked_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "trust": {"config_block": trust.config_block_number, "config_block_hash": trust.config_block_hash},
        "lane_filter": args.lane,
        **found.to_dict(),
        **chain.to_dict(),
    }
    missing = args.lane is not None and args.lane not in chain.lanes
    doc["ok"] = chain.ok and not found.problems and not missing
    if missing:
        doc["block_problems"].append(f"lane {args.lane} has no window in these blocks")
    rows = []
    for lane in chain.lanes.values():
        tip = lane.tip
        rows.append(
            [
                lane.lane,
                f"{lane.checked}/{len(lane.windows)}",
                str(lane.first_seq),
                "-" if tip is None else str(tip.seq),
                "-" if tip is None else tip.window_end,
                lane.verdict,
            ]
        )
    print(
        f"channel {channel}: blocks {found.first_block}..{found.last_block} ({found.blocks}), trust config block"
        f" {trust.config_block_number}"
    )
    if rows:
        print(table(["lane", "windows", "first seq", "tip seq", "tip window end", "verdict"], rows))
    else:
        print("no chained window in these blocks")
    for t in found.left_out:
        print(f"  left out: block {t.block} tx {t.tx} ({t.code}) lane {t.lane} seq {t.seq}: {t.note}; {t.endorsed}")
    for problem in doc["block_problems"]:
        print(f"  problem: {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.html is not None:
        args.html.write_text(render_chain_html(doc))
    return EXIT_VALID if doc["ok"] else EXIT_INVALID


def _read_blocks_paths(paths: list[Path]) -> Iterator[tuple[Path, bytes]]:
    yield from zip(paths, _read_blocks(paths), strict=True)
