"""``receipt-verify chainpoint``: print a receipt's Chainpoint v4 export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..chainpoint import to_chainpoint_v4
from ..codec import parse_receipt
from ..errors import UsageError
from .common import EXIT_VALID


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="receipt-verify chainpoint", description="Print a receipt's Chainpoint v4 export.")
    p.add_argument("receipt", type=Path)
    args = p.parse_args(argv)
    try:
        data = args.receipt.read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.receipt}: cannot read ({exc.strerror})") from None
    json.dump(to_chainpoint_v4(parse_receipt(data)), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_VALID
