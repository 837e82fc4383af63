"""``receipt-verify``: verify receipts offline.

Exit codes: 0 every receipt valid; 1 at least one receipt invalid; 2 bad usage or unreadable input.
"""

from __future__ import annotations

import signal
import sys

from ..errors import Error, UsageError
from . import audit, chain, chainpoint, event, history, ledger, receipts, trust
from .common import EXIT_INVALID, EXIT_USAGE, EXIT_VALID

__all__ = ["EXIT_INVALID", "EXIT_USAGE", "EXIT_VALID", "main", "run"]


def run() -> None:
    """Console entry point: like Unix tools, die quietly when the reader of the output goes away."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {
        "ledger": ledger.main,
        "chainpoint": chainpoint.main,
        "trust": trust.main,
        "audit": audit.main,
        "event": event.main,
        "history": history.main,
        "chain": chain.main,
    }
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return receipts.main(argv)
    except UsageError as exc:
        print(f"receipt-verify: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_USAGE
    except Error as exc:
        print(f"receipt-verify: invalid: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_INVALID
    except SystemExit as exc:  # argparse: --help is 0, bad usage is 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
