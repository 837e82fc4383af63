"""Verifying receipts as reports, in this process or in worker processes that the parent keeps in order.

The workers read their share of a JSON-lines file themselves and send back reports as JSON text, with the
ledger entries and Fabric blocks each verified anchor rests on; the parent checks those for forks in
input order (``Forks``), so ``--jobs N`` gives the report one process gives.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..codec import Limits
from ..errors import Error, UsageError
from ..fabric.evidence import SeenBlocks
from ..fabric.trust import load_trust
from ..ledger import SeenEntries, fork_reason
from ..verify import (
    FABRIC_FAILED_DETAILS,
    AnchorPolicy,
    AnchorResult,
    AnchorStatus,
    BlockVersion,
    VerificationResult,
    Verifier,
    verified_blocks,
    verified_entries,
)


@dataclass
class Item:
    """One receipt to verify and where it came from."""

    source: str
    data: bytes


@dataclass(frozen=True)
class Setup:
    """What a worker process needs to build the same verifier (picklable)."""

    keys: list[bytes]
    trust: bytes | None
    limits: Limits
    strict_schema: bool
    policy: AnchorPolicy
    record: bytes | None
    record_hash: str | None
    strict_evidence: bool = False


_WORKER: tuple[Verifier, Setup] | None = None


def init_worker(setup: Setup) -> None:
    global _WORKER
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = [Ed25519PublicKey.from_public_bytes(k) for k in setup.keys]
    trust = load_trust(setup.trust) if setup.trust is not None else None
    verifier = Verifier(
        keys,
        limits=setup.limits,
        strict_schema=setup.strict_schema,
        fabric_trust=trust,
        strict_evidence=setup.strict_evidence,
    )
    verifier._seen, verifier._seen_blocks = _ForkedInParent(), _BlocksForkedInParent()
    _WORKER = (verifier, setup)


class _ForkedInParent(SeenEntries):
    """A worker's fork check: it passes every entry and sends each receipt's to the parent, which
    checks them in input order (a fork's two entries may reach two workers), as one process would."""

    def see(self, key: str, seq: int, digest: bytes) -> bool:
        return True


class _BlocksForkedInParent(SeenBlocks):
    """``_ForkedInParent`` for the versions of Fabric blocks."""

    def see(self, channel: str, number: int, header_hash: str, signers: Sequence[str]) -> str | None:
        return None


_Entries = tuple[tuple[str, int, bytes], ...]  # verify.verified_entries
_Blocks = tuple[tuple[str, int, tuple[BlockVersion, ...]], ...]  # verify.verified_blocks
# A report as a worker sends it back: (valid, has warnings, the report as JSON text, the ledger entries its
# verified local anchors rest on, the blocks of its verified Fabric anchors). The parent checks the entries
# and blocks for forks, counts and writes; it decodes the few reports it keeps or changes for a fork.
Encoded = tuple[bool, bool, str, _Entries, _Blocks]


class Forks:
    """The parent's fork checks over every worker's receipts, in input order: the same verdicts as one process."""

    def __init__(self, seen: SeenEntries, policy: AnchorPolicy) -> None:
        self.entries, self.blocks, self.policy = seen, SeenBlocks(), policy

    def check(self, valid: bool, warned: bool, text: str, entries: _Entries, blocks: _Blocks) -> tuple[bool, bool, str]:
        """(valid, warned, report) once this receipt's entries and blocks are checked against those before it:
        an anchor whose entry or block differs from one seen first at its place fails, as ``Verifier`` fails it."""
        local = {
            f"{k}:{seq}": fork_reason(k, seq) for k, seq, digest in entries if not self.entries.see(k, seq, digest)
        }
        fabric = {}
        for channel, anchored_in, rests_on in blocks:
            seen = [self.blocks.see(channel, *block) for block in rests_on]  # each one seen, as Verifier sees them
            why = next((w for w in seen if w is not None), None)
            if why is not None:
                fabric[channel, anchored_in] = why
        if not local and not fabric:
            return valid, warned, text
        report = json.loads(text)
        source = report["source"]
        for a in report["anchors"]:
            if a["status"] != AnchorStatus.VERIFIED.value:
                continue
            if a["type"] == "local" and a["anchor_id"] in local:
                a["status"], a["reason"] = AnchorStatus.FAILED.value, local[a["anchor_id"]]
            elif a["type"] == "fabric" and (a["details"]["channel"], a["details"]["block_number"]) in fabric:
                d = a["details"]
                a["status"], a["reason"] = AnchorStatus.FAILED.value, fabric[d["channel"], d["block_number"]]
                a["details"] = {k: d[k] for k in FABRIC_FAILED_DETAILS}  # as a failed check leaves them
        for k in ("valid", "reason", "source", "warnings"):
            report.pop(k, None)
        _finish(report, self.policy, source)
        return report["valid"], "warnings" in report, json.dumps(report)


def _work(chunk: list[tuple[str, bytes]]) -> list[Encoded]:
    assert _WORKER is not None
    verifier, setup = _WORKER
    out = []
    for source, data in chunk:
        report, result = check(verifier, Item(source, data), setup.policy, setup.record, setup.record_hash)
        entries, blocks = (verified_entries(result), verified_blocks(result)) if result is not None else ((), ())
        out.append((bool(report["valid"]), "warnings" in report, json.dumps(report), entries, blocks))
    return out


def _work_lines(path: str, start: int, end: int, first_line: int) -> list[Encoded]:
    """``_work`` on the lines of a JSON-lines file between two byte offsets, read by the worker itself."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")
    return _work([(f"{path}:{n}", line.rstrip(b"\r")) for n, line in enumerate(lines, first_line) if line.strip()])


def line_ranges(path: Path, size: int = 1 << 21) -> Iterator[tuple[int, int, int]]:
    """(start, end, first line number) of consecutive pieces of about ``size`` bytes, each ending after a
    newline (the last one at the end of the file): the file is read once, in blocks, counting newlines.
    A piece ends at its block's last newline, so what a block leaves over holds none."""
    start = pos = 0
    line = 1
    with open(path, "rb") as handle:
        while block := handle.read(size):
            base, pos = pos, pos + len(block)
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one long line: the piece goes on into the next block
                continue
            yield start, base + cut, line
            line += block.count(b"\n", 0, cut)
            start = base + cut
    if start < pos:
        yield start, pos, line


def parallel(
    setup: Setup,
    files: list[Path | None],
    jobs: int,
    items: Callable[[list[Path | None]], Iterator[Item]],
    chunk: int = 1000,
) -> Iterator[list[Encoded]]:
    """Chunks of encoded reports in input order from ``jobs`` processes; at most 2 chunks per process in
    flight (bounded memory).

    Receipts of one tree sit next to each other in the service's output, so a chunk mostly shares its
    tree's anchors, ledger signatures and Fabric blocks, which each process checks once and caches. The
    workers read JSON-lines files themselves (the parent hands out byte ranges) and encode the reports:
    the parent, which would otherwise read, send and write everything for every process, stays light."""
    from concurrent.futures import Future, ProcessPoolExecutor

    pending: deque[Future[list[Encoded]]] = deque()

    def submit(future: Future[list[Encoded]]) -> Iterator[list[Encoded]]:
        pending.append(future)
        while len(pending) >= 2 * jobs:
            yield pending.popleft().result()

    with ProcessPoolExecutor(jobs, initializer=init_worker, initargs=(setup,)) as pool:
        for f in files:
            if f is not None and f.suffix == ".jsonl":
                try:
                    for start, end, first in line_ranges(f):
                        yield from submit(pool.submit(_work_lines, str(f), start, end, first))
                except OSError as exc:
                    raise UsageError(f"{f}: cannot read ({exc.strerror})") from None
                continue
            batch: list[tuple[str, bytes]] = []
            for item in items([f]):  # other files and standard input: read here, sent in chunks
                batch.append((item.source, item.data))
                if len(batch) == chunk:
                    yield from submit(pool.submit(_work, batch))
                    batch = []
            if batch:
                yield from submit(pool.submit(_work, batch))
        while pending:
            yield pending.popleft().result()


def check(
    verifier: Verifier, item: Item, policy: AnchorPolicy, record: bytes | None, record_hash: str | None
) -> tuple[dict[str, Any], VerificationResult | None]:
    """The report on one receipt, and the result it came from (None for a malformed receipt)."""
    try:
        result: VerificationResult = verifier.verify(item.data, record=record, record_hash=record_hash)
    except Error as exc:
        error = {"source": item.source, "valid": False, "error": type(exc).__name__, "reason": exc.diagnostics()}
        return error, None
    report = result.to_dict()
    _finish(report, policy, item.source)
    return report, result


def _finish(report: dict[str, Any], policy: AnchorPolicy, source: str) -> None:
    """Add a report's verdict under ``policy``, its source and its warnings (what the anchors' evidence says
    that the trust file does not), in that order: the one place both a worker and the parent write them."""
    reason = policy.unmet_reason(
        tuple(
            AnchorResult(a["type"], a["anchor_id"], AnchorStatus(a["status"]), a["reason"], a["expected_value"])
            for a in report["anchors"]
        )
    )
    report["valid"] = reason is None
    if reason is not None:
        report["reason"] = reason
    report["source"] = source
    warnings = sorted({w for a in report["anchors"] for w in a.get("details", {}).get("warnings", [])})
    if warnings:
        report["warnings"] = warnings
