"""History bundles: is a subject's log complete, and as of which window (spec section 14.3-14.4)? Pure,
no I/O.

A subject's records in one domain form an append-only log (``logs``); every window commits to the
heads of all logs of its domain, in the sorted heads tree (``sorted_heads``) or, for chained windows,
the indexed one (``heads``). A history bundle carries the whole log, the head proof and the anchor of
the window; checking it says whether the history is complete and as of which window, or exactly what
is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .chain import ChainWindow
from .codec import _HASH_RE, parse_anchor
from .errors import HistoryError, MalformedReceiptError, VerificationError
from .evidence import parse_blocks
from .fabric.evidence import FabricChecker
from .fabric.trust import ChannelTrust
from .fabric.windows import find_successor, tip_reads
from .heads import check_indexed_proof
from .ledger import entry_hash, verify_entry_signature
from .logs import log_root, record_leaf
from .model import Anchor, Binding, FabricAnchor, LedgerEntry, LocalAnchor, TreeInfo, canonical_json
from .proof_id import check_binding, node_field, parse_proof_id, ticks_to_received
from .sorted_heads import check_heads_proof, is_indexed_proof

HISTORY_CONTEXT = "https://w3id.org/health-receipt/history/v1"
HISTORY_TYPE = "HealthReceiptHistory"
MAX_RECORDS = 1 << 22
MAX_PROBLEMS = 50  # per-record problems listed before the rest are counted
MAX_SKEW = timedelta(seconds=10)  # the chaincode's bound on a window's end past its transaction's time
NO_APPEND_ONLY = "no append-only guarantee: the window is not chained, its heads are the service's word"
NOT_PROVEN = (
    "not proven by a successor (none in the bundle): that it committed rests on the peer that served the block,"
    " whose validation flags nobody signs"
)


@dataclass(frozen=True)
class Record:
    """One record of a log, as a bundle carries it."""

    seq: int
    hash: bytes
    proof_id: bytes
    nonce: bytes


def _b64(value: Any, width: int, where: str) -> list[bytes]:
    if type(value) is not str:
        raise MalformedReceiptError(f"{where} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedReceiptError(f"{where} is not valid base64") from None
    if len(raw) % width:
        raise MalformedReceiptError(f"{where} holds {len(raw)} bytes, not a multiple of {width}")
    return [raw[i : i + width] for i in range(0, len(raw), width)]


def pack(values: Sequence[bytes]) -> str:
    """Fixed-size values as one base64 string (the bundle's compact columns)."""
    return base64.b64encode(b"".join(values)).decode("ascii")


@dataclass
class HistoryReport:
    """What a history bundle proves (``problems`` empty: complete and anchored)."""

    subject: str
    domain: str
    size: int = 0
    window_id: str | None = None
    window_end: str | None = None
    anchor: str | None = None
    append_only: str = NO_APPEND_ONLY
    committed: str | None = None  # what proves a chained Fabric window committed (None: no such anchor)
    problems: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the bundle proves the whole log of the subject in the domain."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON report."""
        return {
            "subject": self.subject,
            "domain": self.domain,
            "complete": self.complete,
            "records": self.size,
            "window_id": self.window_id,
            "window_end": self.window_end,
            "anchor": self.anchor,
            "append_only": self.append_only,
            "committed": self.committed,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class LogCheck:
    """A log as its bundle names it (size and root), its records, and whether their order is broken."""

    size: int
    root: bytes
    records: list[Record]
    leaves: list[bytes]
    out_of_sequence: bool  # a gap or records out of order (already in the report's problems)


def check_log(subject: str, domain: str, log: Any, report: HistoryReport) -> LogCheck:
    """The log's records against its own head; every problem is added to ``report`` with its sequence."""
    if not isinstance(log, Mapping) or set(log) != {"size", "root", "hashes", "proof_ids", "nonces", "leaves"}:
        raise MalformedReceiptError("log: expected size, root, hashes, proof_ids, nonces, leaves")
    size, root_hex = log["size"], log["root"]
    if type(size) is not int or not 0 <= size <= MAX_RECORDS or type(root_hex) is not str:
        raise MalformedReceiptError("log: size is an integer, root 64 hex")
    try:
        root = bytes.fromhex(root_hex)
    except ValueError:
        raise MalformedReceiptError("log.root is not hex") from None
    hashes, pids = _b64(log["hashes"], 32, "log.hashes"), _b64(log["proof_ids"], 16, "log.proof_ids")
    nonces, leaves = _b64(log["nonces"], 16, "log.nonces"), _b64(log["leaves"], 32, "log.leaves")
    if not len(hashes) == len(pids) == len(nonces) == len(leaves):
        raise MalformedReceiptError("log: hashes, proof_ids, nonces and leaves hold different counts")
    if len(leaves) != size:
        report.problems.append(f"the bundle holds {len(leaves)} records, but the log it names has {size}")
    elif log_root(leaves) != root:
        report.problems.append(f"the log's entries do not form the head it names (size {size}, root {root_hex[:16]}…)")
    records: list[Record] = []
    placed: list[tuple[int, int]] = []  # (position, the log sequence the record really holds)
    binding = _BindingDigests(domain, subject)
    for i, (h, p, n, leaf) in enumerate(zip(hashes, pids, nonces, leaves, strict=True)):
        records.append(Record(i, h, p, n))
        if hashlib.sha256(n + p + h + binding.at(i)).digest() == leaf:  # record_leaf(n, p, h, domain, subject, i)
            if not _id_binds(p, h):
                _check_id(p, h, i, report)  # names the problem
            placed.append((i, i))
            continue
        found = next(
            (j for j in range(max(0, i - 64), i + 65) if j != i and record_leaf(n, p, h, domain, subject, j) == leaf),
            None,
        )
        if found is None:
            report.problems.append(
                f"record at sequence {i} is not a record of {subject} in {domain} (another subject or domain)"
            )
        else:
            placed.append((i, found))
    seqs = [j for _, j in placed]
    missing = sorted(set(range(seqs[-1] + 1)) - set(seqs)) if seqs else []
    out_of_sequence = True
    if any(b <= a for a, b in pairwise(seqs)):
        pos, held = next((a, b) for a, b in placed if a != b)
        report.problems.append(f"records out of order: position {pos} holds the log's record {held}")
    elif missing:
        report.problems.append(f"gap at sequence {missing[0]}: {len(missing)} record(s) of the log left out")
    else:
        out_of_sequence = False
    if len(report.problems) > MAX_PROBLEMS:
        extra = len(report.problems) - MAX_PROBLEMS
        del report.problems[MAX_PROBLEMS:]
        report.problems.append(f"... and {extra} more problem(s) of the same kind")
    return LogCheck(size, root, records, leaves, out_of_sequence)


class _BindingDigests:
    """``Binding(domain, subject, seq).digest()`` for every ``seq`` of one log: the canonical JSON differs
    only in the number before its closing brace, so its prefix is hashed once."""

    def __init__(self, domain: str, subject: str) -> None:
        text = canonical_json(Binding(domain, subject, 0).to_dict())
        if not text.endswith(b":0}"):  # subject_seq sorts last: the shape this relies on
            raise AssertionError("unexpected canonical form of a binding")
        self._prefix = hashlib.sha256(text[:-2])

    def at(self, seq: int) -> bytes:
        h = self._prefix.copy()
        h.update(b"%d}" % seq)
        return h.digest()


def _id_binds(pid: bytes, h: bytes) -> bool:
    """Whether a 16-byte proof id is a version-1 UUID whose node field binds hash ``h`` (what
    ``_check_id`` checks, without the text round trip; the receive time is the id's own)."""
    n = int.from_bytes(pid, "big")
    time_hi_version, clock_hi = (n >> 64) & 0xFFFF, (n >> 56) & 0xFF
    if time_hi_version >> 12 != 1 or clock_hi >> 6 != 0b10:
        return False
    ticks = ((time_hi_version & 0x0FFF) << 48) | (((n >> 80) & 0xFFFF) << 32) | (n >> 96)
    clock_seq = ((clock_hi & 0x3F) << 8) | ((n >> 48) & 0xFF)
    return pid[10:] == node_field(ticks, clock_seq, h.hex())


def _check_id(pid: bytes, h: bytes, i: int, report: HistoryReport) -> None:
    text = pid.hex()
    text = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    try:
        check_binding(text, h.hex(), ticks_to_received(parse_proof_id(text).ticks))
    except (MalformedReceiptError, VerificationError) as exc:
        report.problems.append(f"record at sequence {i}: {exc}")


def _parse_time(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise MalformedReceiptError(f"{where}: {text!r:.40} is not an RFC 3339 time") from None


_WINDOW_KEYS = frozenset(
    {"window_id", "tree_index", "tree_size", "root", "window_end", "heads_root", "heads_size", "anchors"}
)


@dataclass(frozen=True)
class Window:
    """The window a bundle is as of: one of its trees, its heads commitment and that tree's anchors."""

    window_id: str
    tree_index: int
    tree_size: int
    root: str
    window_end: str
    heads_root: str
    heads_size: int
    anchors: tuple[Anchor, ...]
    ended: datetime  # window_end, parsed


def _window(value: Any) -> Window:
    if not isinstance(value, Mapping) or set(value) != _WINDOW_KEYS:
        raise MalformedReceiptError(f"window: expected exactly {', '.join(sorted(_WINDOW_KEYS))}")
    ints = (value["tree_index"], value["tree_size"], value["heads_size"])
    texts = (value["window_id"], value["root"], value["window_end"], value["heads_root"])
    if not all(type(v) is int and v >= 0 for v in ints) or not all(type(v) is str for v in texts):
        raise MalformedReceiptError("window: tree_index, tree_size, heads_size are integers; the rest strings")
    if not all(_HASH_RE.fullmatch(value[k]) for k in ("root", "heads_root")):
        raise MalformedReceiptError("window: root and heads_root are 64 lowercase hex characters")
    anchors = value["anchors"]
    if not isinstance(anchors, list) or not 1 <= len(anchors) <= 16:
        raise MalformedReceiptError("window.anchors: a list of 1 to 16 anchors")
    parsed = tuple(parse_anchor(a, f"window.anchors[{i}]") for i, a in enumerate(anchors))
    if len({(a.type, a.anchor_id) for a in parsed}) != len(parsed):
        raise MalformedReceiptError("window.anchors: lists the same anchor (type and anchor_id) twice")
    return Window(
        window_id=value["window_id"],
        tree_index=value["tree_index"],
        tree_size=value["tree_size"],
        root=value["root"],
        window_end=value["window_end"],
        heads_root=value["heads_root"],
        heads_size=value["heads_size"],
        anchors=parsed,
        ended=_parse_time(value["window_end"], "window.window_end"),
    )


def check_window(
    w: Window,
    domain: str,
    ledger_keys: Mapping[str, Ed25519PublicKey],
    fabric: FabricChecker | None,
    blocks: Mapping[tuple[str, int], bytes],
) -> tuple[list[str], list[str], list[str]]:
    """(anchors that verify the window and its heads, why the others do not, what proves each chained
    Fabric anchor's commit); a chained Fabric anchor's entry says so ("chained: ...")."""
    verified: list[str] = []
    others: list[str] = []
    committed: list[str] = []
    tree = TreeInfo(w.window_id, w.tree_index, 0, max(1, w.tree_size))
    for a in w.anchors:
        if isinstance(a, LocalAnchor):
            e = a.entry
            key = ledger_keys.get(a.key_id)
            if key is None:
                others.append(f"local {a.anchor_id}: no pinned ledger key {a.key_id} (pass --ledger-key)")
                continue
            verify_entry_signature(key, e, a.signature)
            got = (e.domain, e.window_id, e.tree_index, e.tree_size, e.root, e.window_end, e.heads_root, e.heads_size)
            want = (domain, w.window_id, w.tree_index, w.tree_size, w.root, w.window_end, w.heads_root, w.heads_size)
            if got != want:
                raise HistoryError(
                    f"local anchor {a.anchor_id} signs another window, domain or heads than the bundle's"
                )
            verified.append(f"local ledger {a.key_id} entry {e.seq}")
        elif isinstance(a, FabricAnchor):
            block = blocks.get((a.channel, a.block_number))
            if fabric is None or a.channel not in fabric.channels or block is None:
                why = (
                    "no trust file pins it (pass --trust)"
                    if fabric is None or a.channel not in fabric.channels
                    else "no block"
                )
                others.append(f"fabric {a.channel}: {why}")
                continue
            _, d = fabric.check(a, block, w.root, tree, blocks)
            got_f = (d.get("heads_root"), d.get("heads_size"), d.get("window_end"))
            if got_f != (w.heads_root, w.heads_size, w.window_end):
                raise HistoryError(
                    f"fabric anchor {a.anchor_id} wrote other heads or another window end than the bundle's"
                )
            note = "" if a.channel == domain else f" (not the channel of {domain})"
            tx_time = _parse_time(str(d.get("tx_time")), f"fabric anchor {a.anchor_id}: tx_time")
            if w.ended > tx_time + MAX_SKEW:
                raise HistoryError(
                    f"fabric anchor {a.anchor_id}: the window ends {w.window_end}, after its transaction"
                    f" ({d.get('tx_time')}) plus {MAX_SKEW.total_seconds():g} s: a window cannot be anchored before"
                    " it ends"
                )
            if d.get("chain_seq") is not None:
                lane = str(d.get("lane"))
                note += f" (chained: window {d['chain_seq']} of lane {lane} on {a.channel})"
                after = _successor(a, block, lane, fabric.channels[a.channel], blocks)
                committed.append(
                    f"{a.channel} block {a.block_number}: committed, read as the lane's tip by window {after.seq}"
                    f" ({after.where})"
                    if after is not None
                    else f"{a.channel} block {a.block_number}: {NOT_PROVEN}"
                )
            verified.append(f"Fabric {a.channel} block {a.block_number}{note}")
        else:
            others.append(f"{a.type} {a.anchor_id}: an anchor type this verifier does not know")
    return verified, others, committed


def _successor(
    a: FabricAnchor, block: bytes, lane: str, trust: ChannelTrust, blocks: Mapping[tuple[str, int], bytes]
) -> ChainWindow | None:
    """The successor among ``blocks`` of the anchor's transaction, located in ``block`` (its block, which the
    anchor check authenticated) as the first transaction with its id, as the anchor check takes it."""
    mine = next((r for r in tip_reads(block, a.chaincode) if r.tx_id == a.tx_id), None)
    if mine is None or mine.tip is None:
        return None
    ours = [data for (channel, _), data in sorted(blocks.items()) if channel == a.channel]
    return find_successor(ours, trust, lane, (a.block_number, mine.index), mine.tip, a.chaincode)


def verify_history(
    doc: Any,
    ledger_keys: Mapping[str, Ed25519PublicKey],
    *,
    fabric_trust: Mapping[str, ChannelTrust] | None = None,
    ledger: Sequence[LedgerEntry] = (),
    previous: Any = None,
    max_age: timedelta | None = None,
    as_of: datetime | None = None,
    lane: str | None = None,
    require_committed: bool = False,
) -> tuple[HistoryReport, list[Record]]:
    """Check a history bundle: its log, the head proof, the window's anchors, freshness and growth.

    The window is authenticated by its local ledger anchor (a pinned key) or its Fabric anchor (a
    pinned channel and the bundle's blocks); at least one must verify. Freshness is judged as of
    ``as_of`` (default now; the bundle's own ``as_of`` is the holder's word, not evidence): ``ledger``
    entries of the pinned ledger with a newer window of the domain ended by then make the bundle
    stale, and so does a window older than ``max_age``. ``previous``: an older bundle of the same log,
    which must be a prefix of this one. ``lane``: the chain the domain's windows must be in on the domain's
    own channel (default: the domain's name; a deployment with a ``chain_prefix`` names ``PREFIX.DOMAIN``).
    A chained Fabric window is proven committed by a successor among the bundle's blocks (a later window
    whose endorsed read of the lane's tip names its transaction); ``require_committed`` makes a window
    without one a problem.
    """
    if not isinstance(doc, Mapping) or doc.get("@context") != HISTORY_CONTEXT or doc.get("type") != HISTORY_TYPE:
        raise MalformedReceiptError(f"not a history bundle (@context {HISTORY_CONTEXT}, type {HISTORY_TYPE})")
    keys = {"@context", "type", "subject", "domain", "as_of", "log", "head_proof", "window", "fabric_blocks"}
    if not set(doc) <= keys or not keys - {"fabric_blocks"} <= set(doc):
        raise MalformedReceiptError(
            f"history bundle: expected the members {', '.join(sorted(keys))} (fabric_blocks optional)"
        )
    subject, domain, claimed = doc["subject"], doc["domain"], doc["as_of"]
    if not all(type(v) is str for v in (subject, domain, claimed)):
        raise MalformedReceiptError("history bundle: subject, domain and as_of are strings")
    report = HistoryReport(subject, domain)
    log = check_log(subject, domain, doc["log"], report)
    size, root, records = log.size, log.root, log.records
    report.size = len(records)
    w = _window(doc["window"])
    report.window_id, report.window_end = w.window_id, w.window_end
    fabric = FabricChecker(dict(fabric_trust)) if fabric_trust else None
    blocks = parse_blocks(doc.get("fabric_blocks", []))
    verified, others, committed = check_window(w, domain, ledger_keys, fabric, blocks)
    if not verified:
        raise HistoryError("no anchor of the window verifies with what is pinned: " + "; ".join(others))
    report.anchor = ", ".join(verified)
    report.committed = "; ".join(committed) or None
    if require_committed and not committed:
        report.problems.append(f"window {w.window_id} has no chained Fabric anchor whose commit could be proven")
    elif require_committed and any(c.endswith(NOT_PROVEN) for c in committed):
        report.problems.append(
            f"the commit of window {w.window_id} is not proven by a successor: fetch the bundle again after the"
            " lane's next window (an idle lane gets an empty one), or check it without --require-committed"
        )
    chained = [v for v in verified if "(chained: " in v]
    pinned = f" of lane {lane or domain} on {domain})"  # a lane's chain is one per channel: pin both
    heads_root = bytes.fromhex(w.heads_root)
    if is_indexed_proof(doc["head_proof"]):
        proven_size, proven_root = check_indexed_proof(subject, doc["head_proof"], heads_root, w.heads_size)
        if any(v.endswith(pinned) for v in chained):
            report.append_only = "checked by both organisations' peers: " + "; ".join(
                v for v in chained if v.endswith(pinned)
            )
        elif chained:
            report.append_only = (
                f"no append-only guarantee: chained only in another lane or channel than lane {lane or domain} on"
                f" {domain} ({'; '.join(chained)}), and anyone the writer rule allows can start a lane"
            )
    elif chained:
        raise HistoryError("the window is chained, but its head proof is of the sorted heads tree (heads v1)")
    else:
        proven_size, proven_root = check_heads_proof(subject, doc["head_proof"], heads_root, w.heads_size)
    if (proven_size, proven_root) != (size, root):
        report.problems.append(
            f"the log's head (size {size}) is not the head anchored in window {w.window_id}"
            f" (size {proven_size}): records were added, dropped or rewritten"
        )
    if len(records) < proven_size and not log.out_of_sequence:
        report.problems.append(f"newest record(s) missing: the log has {proven_size}, the bundle {len(records)}")
    if ledger:
        _check_in_ledger(w, ledger_keys, ledger, report)
    cutoff = as_of or datetime.now(UTC)
    newer = [
        (t, e)
        for e in ledger
        if e.domain == domain
        and e.heads_root is not None
        and (t := _parse_time(e.window_end, f"ledger entry {e.seq}: window_end")) <= cutoff
    ]
    newest_end, newest = max(newer, key=lambda te: te[0], default=(w.ended, None))
    if newest is not None and newest_end > w.ended:
        report.problems.append(
            f"a head older than the newest anchored window given: window {newest.window_id}"
            f" (ledger entry {newest.seq}, ended {newest.window_end}) is newer than {w.window_id}"
        )
    if max_age is not None and cutoff - w.ended > max_age:
        report.problems.append(f"stale: window {w.window_id} ended {w.window_end}, more than {max_age} ago")
    if previous is not None:
        _check_growth(previous, doc, log.leaves, report)
    return report, records


def _check_in_ledger(
    w: Window, keys: Mapping[str, Ed25519PublicKey], ledger: Sequence[LedgerEntry], report: HistoryReport
) -> None:
    """The window's ledger entry must be the given ledger's entry at its place; another one there is a fork."""
    by_seq = {e.seq: e for e in ledger}
    for a in w.anchors:
        if not isinstance(a, LocalAnchor) or a.key_id not in keys:
            continue
        mine = by_seq.get(a.entry.seq)
        if mine is None:
            report.problems.append(
                f"the window's ledger entry {a.entry.seq} is not in the given ledger ({len(ledger)} entries):"
                " the bundle came from a ledger the given one does not hold (fetch a newer ledger, or it is a fork)"
            )
        elif entry_hash(mine) != entry_hash(a.entry):
            report.problems.append(
                f"fork: the given ledger's entry {a.entry.seq} differs from the bundle's (same key {a.key_id},"
                " same place: spec section 5.1)"
            )


def _check_growth(previous: Any, doc: Mapping[str, Any], new: list[bytes], report: HistoryReport) -> None:
    if not isinstance(previous, Mapping) or previous.get("type") != HISTORY_TYPE:
        raise MalformedReceiptError("--previous: not a history bundle")
    if (previous.get("subject"), previous.get("domain")) != (doc["subject"], doc["domain"]):
        raise MalformedReceiptError("--previous: a bundle of another subject or domain")
    old_log = previous.get("log")
    if not isinstance(old_log, Mapping) or "leaves" not in old_log:
        raise MalformedReceiptError("--previous: its log has no leaves")
    old = _b64(old_log["leaves"], 32, "--previous: log.leaves")
    if len(old) > len(new):
        report.problems.append(f"forked log: it shrank from {len(old)} records to {len(new)}")
    elif new[: len(old)] != old:
        first = next(i for i in range(len(old)) if old[i] != new[i])
        report.problems.append(
            f"forked log: record {first} differs from the older bundle's (the log was rewritten, it did not only grow)"
        )
