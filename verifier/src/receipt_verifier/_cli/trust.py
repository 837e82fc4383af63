"""``receipt-verify trust``: pin Fabric channels from their config blocks, or show a trust file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._progress import table
from ..errors import UsageError
from ..fabric.trust import load_trust, make_trust
from .common import EXIT_VALID, load_trust_file


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="receipt-verify trust",
        description="Make the Fabric trust file from each channel's genesis or config block (fetched out of band).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a trust file from config blocks")
    init.add_argument("--config-block", type=Path, action="append", required=True, metavar="FILE")
    init.add_argument("-o", "--output", type=Path, required=True)
    show = sub.add_parser("show", help="check a trust file and print what it pins")
    show.add_argument("trust", type=Path)
    args = p.parse_args(argv)
    if args.command == "show":
        channels = load_trust_file(args.trust)
    else:
        blocks = []
        for f in args.config_block:
            try:
                blocks.append(f.read_bytes())
            except OSError as exc:
                raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
        doc = make_trust(blocks)
        args.output.write_text(json.dumps(doc, indent=2) + "\n")
        channels = load_trust(doc)
    rows = [
        [
            name,
            str(t.config_block_number),
            t.config_block_hash,
            ", ".join(t.application_orgs),
            t.summary()["endorsement_policy"],
        ]
        for name, t in sorted(channels.items())
    ]
    print(table(["channel", "config block", "header hash (compare out of band)", "orgs", "endorsement"], rows))
    return EXIT_VALID
