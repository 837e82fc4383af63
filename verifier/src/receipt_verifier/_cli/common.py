"""What the subcommands share: exit codes, trust and JSON files, the anchor columns of a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from .. import strict_json
from ..errors import UsageError
from ..fabric.trust import ChannelTrust, load_trust
from ..verify import AnchorStatus

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def why(report: dict[str, Any]) -> str:
    """The receipt's reason, then each anchor that did not verify and why."""
    parts = [str(report["reason"])] if report.get("reason") else []
    if "error" in report:
        parts = [f"{report['error']}: {report.get('reason', '')}"]
    for a in report.get("anchors", []):
        if a["status"] != AnchorStatus.VERIFIED.value:
            where = a.get("details", {}).get("channel", a["type"])
            parts.append(f"{where}: {a['reason']}")
    return "; ".join(parts)


def anchor_summary(report: dict[str, Any]) -> str:
    """Each anchor of a report as place:ok or place:status."""
    parts = []
    for a in report.get("anchors", []):
        where = a.get("details", {}).get("channel", a["type"])
        parts.append(f"{where}:{'ok' if a['status'] == AnchorStatus.VERIFIED.value else a['status']}")
    return ", ".join(parts) or "-"


def load_trust_file(path: Path) -> dict[str, ChannelTrust]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the trust file ({exc.strerror})") from None
    return load_trust(data)


def read_json(path: Path) -> Any:
    try:
        return strict_json.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None


def count_lines(handle: BinaryIO) -> int:
    """The lines of an open file (a last one without a newline too), read in blocks; the file is left at its start."""
    total, last = 0, b"\n"
    while chunk := handle.read(1 << 20):
        total += chunk.count(b"\n")
        last = chunk[-1:]
    handle.seek(0)
    return total + (last != b"\n")
