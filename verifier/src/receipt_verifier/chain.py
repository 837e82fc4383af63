"""Replay of chained windows (spec §14.7-§14.9): pure, no I/O.

Each lane is a chain of windows; every window must succeed the one before it exactly as the
``anchor`` chaincode requires at endorsement (sequence, previous hash, no gap in time, a transition
proof that the heads only grew), and its chain record must say what its arguments said. Windows
read from Fabric blocks also carry their position and the tip version their transaction read:
a window proves that its predecessor's transaction was the committed tip (the successor rule),
since honest peers simulate only against committed state. The newest window of a lane has no
successor yet, so that it committed rests on the exporting peer's word.

The same replay serves the local ledger's windows (no Fabric position): the Fabric-only checks are
skipped for them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import proof_id as pid
from . import strict_json
from .errors import Error
from .heads import TransitionSummary, check_transition, empty_heads

ZERO_PREV = "0" * 64
RECORD_VERSION = 1
MAX_SKEW_NS = 10 * 10**9  # the chaincode's MaxSkew
RECORD_MEMBERS = frozenset(
    {
        "v",
        "lane",
        "seq",
        "prev",
        "window_id",
        "trees",
        "heads_root",
        "heads_size",
        "window_start",
        "window_end",
        "proof_hash",
        "tx_id",
        "tx_time",
    }
)
TIP_NO_SUCCESSOR = "tip (no successor yet: committed status rests on the peer's word)"
TIP = "tip"
COMMITTED = "committed (a successor read it as the tip)"
BATCHED = "in one transaction with the window after it"
CHECKED = "checked"

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")

Position = tuple[int, int]  # (block number, transaction index in the block)


@dataclass(frozen=True)
class ChainWindow:
    """One chained window as presented: its ``AppendWindow`` arguments and the tip record it wrote.

    ``record`` is the chain record exactly as stored (its SHA-256 is the next window's ``prev``);
    ``proof`` the transition proof argument exactly as sent (its SHA-256 is the record's
    ``proof_hash``). ``position`` and ``read_version`` are the Fabric transaction's (block, tx) and
    the version of the tip key its endorsed read set holds (``None``: it read no tip, as the first
    window of a lane must); both ``None`` for a window of the local ledger. ``trees`` (the trees
    argument, parsed) and ``tx_id`` are compared with the record when given. ``problem`` is set when
    the window's evidence already failed (for example its endorsements): the lane stops there. A window
    after the first of an ``AppendWindows`` transaction (``batch_index`` > 0) read no tip: it succeeds
    the window before it in the same transaction."""

    lane: str
    seq: int
    prev: str
    record: bytes
    window_id: str
    window_start: str
    window_end: str
    heads_root: str
    heads_size: int
    proof: str | bytes
    where: str
    position: Position | None = None
    read_version: Position | None = None
    trees: list[Any] | None = None
    tx_id: str | None = None
    problem: str | None = None
    batch_index: int = 0  # the window's place in its transaction (AppendWindows appends several)

    @property
    def proof_bytes(self) -> bytes:
        return self.proof.encode("utf-8") if isinstance(self.proof, str) else self.proof

    @property
    def on_fabric(self) -> bool:
        return self.position is not None


class ChainBreak(Error):
    """A window does not succeed the one before it; ``check`` names the rule it breaks."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass(frozen=True)
class WindowResult:
    """One window of a lane as replayed."""

    seq: int
    window_id: str
    window_end: str
    where: str
    status: str  # COMMITTED, TIP_NO_SUCCESSOR, TIP, CHECKED, "bad", "not checked"
    heads_size: int
    updated: int = 0
    inserted: int = 0
    tx_id: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "window_id": self.window_id,
            "window_end": self.window_end,
            "where": self.where,
            "status": self.status,
            "heads_size": self.heads_size,
            "updated": self.updated,
            "inserted": self.inserted,
        }
        if self.tx_id is not None:
            out["tx_id"] = self.tx_id
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass
class LaneReport:
    """A lane's replay: how many windows held, the first bad one and why, and the tip."""

    lane: str
    windows: list[WindowResult] = field(default_factory=list)
    bad: WindowResult | None = None
    check: str | None = None  # the rule the first bad window breaks

    @property
    def ok(self) -> bool:
        return self.bad is None

    @property
    def checked(self) -> int:
        """Windows that held (up to the first bad one)."""
        return sum(1 for w in self.windows if w.status not in ("bad", "not checked"))

    @property
    def tip(self) -> WindowResult | None:
        """The newest window that held."""
        good = [w for w in self.windows if w.status not in ("bad", "not checked")]
        return good[-1] if good else None

    @property
    def first_seq(self) -> int | None:
        return self.windows[0].seq if self.windows else None

    @property
    def verdict(self) -> str:
        if self.bad is not None:
            return f"BAD at seq {self.bad.seq} ({self.bad.where}): {self.bad.reason}"
        tip = self.tip
        return "ok" if tip is None else f"ok; {tip.status}"

    def to_dict(self) -> dict[str, Any]:
        tip = self.tip
        return {
            "lane": self.lane,
            "ok": self.ok,
            "windows_checked": self.checked,
            "windows_presented": len(self.windows),
            "first_seq": self.first_seq,
            "tip": None if tip is None else tip.to_dict(),
            "first_bad": None if self.bad is None else {**self.bad.to_dict(), "check": self.check},
            "verdict": self.verdict,
            "windows": [w.to_dict() for w in self.windows],
        }


@dataclass
class ChainReport:
    """Every lane's replay."""

    lanes: dict[str, LaneReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(lane.ok for lane in self.lanes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lanes": [self.lanes[k].to_dict() for k in sorted(self.lanes)]}


@dataclass
class _State:
    """What the next window of a lane must succeed."""

    window: ChainWindow | None = None
    record_hash: str = ZERO_PREV
    heads_root: bytes = field(default_factory=lambda: empty_heads().root)
    heads_size: int = 1


def replay(windows: Iterable[ChainWindow]) -> ChainReport:
    """Check each lane's windows in the order given; a lane stops at its first bad window."""
    report = ChainReport()
    states: dict[str, _State] = {}
    for w in windows:
        lane = report.lanes.get(w.lane)
        if lane is None:
            lane = report.lanes[w.lane] = LaneReport(w.lane)
            states[w.lane] = _State()
        if lane.bad is not None:
            lane.windows.append(_result(w, "not checked", None))
            continue
        state = states[w.lane]
        try:
            summary = _check(state, w)
        except ChainBreak as exc:
            lane.bad = _result(w, "bad", None, str(exc))
            lane.check = exc.check
            lane.windows.append(lane.bad)
            continue
        previous = state.window
        if lane.windows and previous is not None and previous.on_fabric and w.on_fabric:
            if w.batch_index > 0:  # the same transaction: as committed as its last window will be
                lane.windows[-1] = _replace_status(lane.windows[-1], BATCHED)
            else:  # it read the previous transaction's write: every window of that transaction committed
                for i in range(len(lane.windows) - 1, -1, -1):
                    if lane.windows[i].status not in (TIP_NO_SUCCESSOR, BATCHED):
                        break
                    lane.windows[i] = _replace_status(lane.windows[i], COMMITTED)
        lane.windows.append(_result(w, TIP_NO_SUCCESSOR if w.on_fabric else CHECKED, summary))
        state.window = w
        state.record_hash = hashlib.sha256(w.record).hexdigest()
        state.heads_root = bytes.fromhex(w.heads_root)
        state.heads_size = w.heads_size
    for lane in report.lanes.values():  # the newest good window of a ledger lane is its tip
        tip = lane.tip
        if tip is not None and tip.status == CHECKED:
            i = lane.windows.index(tip)
            lane.windows[i] = _replace_status(tip, TIP)
    return report


def _result(w: ChainWindow, status: str, summary: TransitionSummary | None, reason: str | None = None) -> WindowResult:
    return WindowResult(
        seq=w.seq,
        window_id=w.window_id,
        window_end=w.window_end,
        where=w.where,
        status=status,
        heads_size=w.heads_size,
        updated=summary.updated if summary else 0,
        inserted=summary.inserted if summary else 0,
        tx_id=w.tx_id,
        reason=reason,
    )


def _replace_status(r: WindowResult, status: str) -> WindowResult:
    return WindowResult(
        r.seq, r.window_id, r.window_end, r.where, status, r.heads_size, r.updated, r.inserted, r.tx_id, r.reason
    )


def _check(state: _State, w: ChainWindow) -> TransitionSummary:
    """The window succeeds ``state``; raises ``ChainBreak`` naming the first rule it breaks."""
    if w.problem is not None:
        raise ChainBreak("evidence", w.problem)
    previous = state.window
    # succession: the chaincode's own checks, in its order
    expected = 0 if previous is None else previous.seq + 1
    if w.seq != expected:
        first = "the lane's first window takes seq 0" if previous is None else f"seq {previous.seq} is the tip"
        raise ChainBreak("sequence", f"seq {w.seq} does not follow ({first}, so {expected} is next)")
    if w.prev != state.record_hash:
        what = "64 zeros (the first window)" if previous is None else "the SHA-256 of the previous record"
        raise ChainBreak("previous hash", f"prev {w.prev} is not {what}, {state.record_hash}")
    start, end = _time(w.window_start, "window_start"), _time(w.window_end, "window_end")
    if end < start:
        raise ChainBreak("arguments", f"window_end {w.window_end} is before window_start {w.window_start}")
    if previous is not None and start != _time(previous.window_end, "the previous window_end"):
        raise ChainBreak(
            "gap in time", f"window_start {w.window_start} is not the previous window's end {previous.window_end}"
        )
    # the successor rule: the transaction read the previous window's write as the tip, or (a window
    # after the first of AppendWindows) the previous window is the one before it in the same transaction
    if w.on_fabric and w.batch_index > 0:
        if previous is None or previous.position != w.position or previous.batch_index != w.batch_index - 1:
            raise ChainBreak(
                "successor",
                f"window {w.batch_index} of its transaction does not follow window {w.batch_index - 1} of the same"
                f" transaction ({previous.where if previous else 'no previous window'})",
            )
    elif w.on_fabric and (previous is None or previous.on_fabric):
        want = None if previous is None else previous.position
        if w.read_version != want:
            got = "no tip" if w.read_version is None else "the tip at block {} tx {}".format(*w.read_version)
            need = "no tip (a first window)" if want is None else "the tip at block {} tx {}".format(*want)
            raise ChainBreak(
                "successor",
                f"the endorsed read set holds {got}, not {need} ({previous.where if previous else 'no previous window'})",
            )
    _check_record(w)
    try:
        proof = strict_json.loads(w.proof_bytes)
    except (ValueError, RecursionError) as exc:
        raise ChainBreak("transition", f"the transition proof is not JSON ({exc})") from None
    try:
        new_root = bytes.fromhex(w.heads_root)
    except ValueError:
        raise ChainBreak("arguments", f"heads_root {w.heads_root!r} is not hex") from None
    try:
        return check_transition(state.heads_root, state.heads_size, new_root, w.heads_size, proof)
    except Error as exc:
        raise ChainBreak("transition", str(exc)) from None


def _check_record(w: ChainWindow) -> None:
    """The chain record says what the window's arguments said."""
    try:
        rec = strict_json.loads(w.record)
    except (ValueError, RecursionError) as exc:
        raise ChainBreak("record", f"the chain record is not JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise ChainBreak("record", "the chain record is not a JSON object")
    missing, extra = sorted(RECORD_MEMBERS - rec.keys()), sorted(rec.keys() - RECORD_MEMBERS)
    if missing or extra:
        raise ChainBreak("record", f"the chain record lacks {missing} or has unknown members {extra}")
    wanted: Mapping[str, Any] = {
        "v": RECORD_VERSION,
        "lane": w.lane,
        "seq": w.seq,
        "prev": w.prev,
        "window_id": w.window_id,
        "heads_root": w.heads_root,
        "heads_size": w.heads_size,
        "window_start": w.window_start,
        "window_end": w.window_end,
        "proof_hash": hashlib.sha256(w.proof_bytes).hexdigest(),
    }
    if w.trees is not None:
        wanted = {**wanted, "trees": w.trees}
    if w.tx_id is not None:
        wanted = {**wanted, "tx_id": w.tx_id}
    for name, value in wanted.items():
        got = rec[name]
        if got != value or type(got) is not type(value):
            what = "the SHA-256 of the proof argument" if name == "proof_hash" else "the window's"
            raise ChainBreak("record", f"the record's {name} {got!r:.80} is not {what} {value!r:.80}")
    if w.on_fabric:  # the chaincode's clock rule, again: no window ends after its transaction (plus the skew)
        tx_time = rec["tx_time"]
        if not isinstance(tx_time, str):
            raise ChainBreak("record", f"the record's tx_time {tx_time!r:.80} is not a time")
        (end_s, end_ns), (tx_s, tx_ns) = _time(w.window_end, "window_end"), _time(tx_time, "tx_time")
        if (end_s - tx_s) * 10**9 + end_ns - tx_ns > MAX_SKEW_NS:
            raise ChainBreak("time", f"window_end {w.window_end} is more than 10 s after its transaction ({tx_time})")


@functools.lru_cache(maxsize=256)  # a receipt asks once per anchor of its window
def received_outside(received: str, start: str, end: str) -> str | None:
    """Why a hash received at ``received`` (``hash_received``) may not be in a chained window from
    ``start`` to ``end`` (section 14.7: every hash of a chained window was received within it), or None."""
    ticks = pid.received_to_ticks(received) - pid.UUID_EPOCH_OFFSET
    at = (ticks // 10_000_000, ticks % 10_000_000 * 100)
    try:
        lo, hi = _time(start, "window_start"), _time(end, "window_end")
    except ChainBreak as exc:
        return str(exc)
    if at < lo:
        return f"received at {received}, before its chained window started ({start})"
    if at > hi:
        return f"received at {received}, after its chained window ended ({end})"
    return None


@functools.lru_cache(maxsize=256)
def _time(text: str, name: str) -> tuple[int, ...]:
    """An RFC 3339 time as a comparable (UTC seconds, nanoseconds)."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise ChainBreak("arguments", f"{name} {text!r} is not an RFC 3339 time")
    try:
        when = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    except ValueError:
        raise ChainBreak("arguments", f"{name} {text!r} is not an RFC 3339 time") from None
    return int(when.timestamp()), int((m[2] or "0").ljust(9, "0"))
