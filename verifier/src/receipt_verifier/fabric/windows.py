"""The chained windows of a channel, read from its blocks under a pinned channel config (spec §14.9).

Every block is checked as ``FabricChecker`` checks a receipt's block: orderer signatures satisfying
the block validation policy of the pinned config (newer config blocks among the blocks are followed
once they verify under the pinned one). Blocks older than the pinned config block are authenticated
by the header chain back from it instead. Every endorser transaction of the anchor chaincode that
calls ``AppendWindow`` is then parsed: its arguments (from the proposal payload), the tip record it
wrote and the version of the tip key it read (from its endorsed read/write set), and its creator and
endorsements are checked against the channel's endorsement policy, as for a receipt. An
``AppendWindows`` transaction gives several windows, each record taken from its endorsed event.

The validation flags (``TRANSACTIONS_FILTER``) are written by the exporting peer and signed by nobody.
They only decide which transactions are offered to the chain: a transaction flagged invalid is listed
(a forger could present it: it is endorsed) and left out. Which windows committed is proved by the
successor rule in ``receipt_verifier.chain.replay``; the newest window of a lane has no successor,
so its commit rests on the peer's word.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf.message import DecodeError

from ..chain import ChainWindow
from ..errors import BlockFormatError, FabricEvidenceError
from ..model import FabricAnchor
from .blocks import ENDORSER_TRANSACTION, TRANSACTIONS_FILTER, Block, envelope_payload, orderer_metadata, parse_block
from .evidence import TIP_PREFIX, CheckedBlock, CheckedTx, FabricChecker, batch_records
from .trust import ChannelTrust

APPEND_WINDOW = "AppendWindow"
APPEND_WINDOWS = "AppendWindows"
WINDOW_ARGS = 9  # per window, after the lane
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # the chaincode's decimal form (str.isdigit takes "²")
VALID = "VALID"


def tip_key(lane: str) -> str:
    """The chaincode's key of a lane's chain record (spec §14.7)."""
    return f"{TIP_PREFIX}{lane}\x00"


@dataclass(frozen=True)
class BlockInfo:
    """What sorting and linking blocks needs, read without checking anything."""

    number: int
    channel: str
    previous_hash: bytes
    header_hash: str


def block_info(data: bytes) -> BlockInfo:
    """A block's number, channel (from its first envelope) and header hashes; ``BlockFormatError`` if it
    is not a block."""
    block = parse_block(data)
    if not block.envelopes:
        raise BlockFormatError(f"block {block.number} has no envelopes")
    _, _, ch, _ = envelope_payload(block.envelopes[0], f"block {block.number}")
    return BlockInfo(block.number, str(ch.channel_id), block.previous_hash, block.header_hash)


@dataclass(frozen=True)
class ListedTx:
    """An ``AppendWindow`` transaction left out of the chain, and why."""

    block: int
    tx: int
    tx_id: str
    code: str  # the validation flag the peer wrote (VALID for a retry that wrote nothing)
    lane: str | None
    seq: str | None
    window_id: str | None
    endorsed: str  # "endorsed by ..." or why the endorsement checks fail
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "tx": self.tx,
            "tx_id": self.tx_id,
            "code": self.code,
            "lane": self.lane,
            "seq": self.seq,
            "window_id": self.window_id,
            "endorsed": self.endorsed,
            "note": self.note,
        }


@dataclass
class ChannelWindows:
    """A channel's chained windows in block order, what was left out, and block-level problems."""

    channel: str
    blocks: int = 0
    first_block: int | None = None
    last_block: int | None = None
    windows: list[ChainWindow] = field(default_factory=list)
    left_out: list[ListedTx] = field(default_factory=list)  # flagged invalid, or retries that wrote nothing
    problems: list[str] = field(default_factory=list)  # blocks that do not verify, gaps in the block chain

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "blocks": self.blocks,
            "first_block": self.first_block,
            "last_block": self.last_block,
            "windows": len(self.windows),
            "left_out": [t.to_dict() for t in self.left_out],
            "block_problems": list(self.problems),
        }


@dataclass(frozen=True)
class _Parsed:
    """An anchor-chaincode transaction as parsed (nothing checked yet)."""

    tx_id: str
    fn: str
    args: list[bytes]
    tip_writes: list[tuple[str, bytes]]
    tip_reads: list[tuple[str, tuple[int, int] | None]]
    events: bytes = b""


def read_windows(
    blocks: Iterable[bytes],
    trust: ChannelTrust,
    *,
    chaincode: str = "anchor",
    lane: str | None = None,
    advance: Callable[[], None] | None = None,
) -> ChannelWindows:
    """The ``AppendWindow`` windows of ``trust.channel`` in ``blocks`` (ascending block numbers)."""
    checker = FabricChecker({trust.channel: trust})
    out = ChannelWindows(trust.channel)
    configs: dict[tuple[str, int], bytes] = {}
    seen_tx: set[str] = set()
    pinned = trust.config_block_number
    previous: Block | None = None
    breaks: set[int] = set()  # block numbers whose link to the block before them is broken or missing
    given: set[int] = set()
    pinned_ok = False
    for data in blocks:
        if advance is not None:
            advance()
        try:
            block = parse_block(data)
        except FabricEvidenceError as exc:
            out.problems.append(f"a block does not parse: {exc}")
            continue
        n = block.number
        out.blocks += 1
        out.first_block = n if out.first_block is None else out.first_block
        out.last_block = n
        given.add(n)
        if previous is not None:
            if n != previous.number + 1:
                breaks.add(n)
                what = "repeats or comes before" if n <= previous.number else "does not follow"
                out.problems.append(f"block {n} {what} block {previous.number}: blocks are missing or out of order")
            elif block.previous_hash.hex() != previous.header_hash:
                breaks.add(n)
                out.problems.append(f"block {n}: its previous hash is not block {previous.number}'s header hash")
        else:
            breaks.add(n)
        previous = block
        checked: CheckedBlock | None = None
        why_not: str | None = None
        if n < pinned:  # authenticated later, by the header chain back from the pinned config block
            checked = CheckedBlock(block, ("the header chain from the pinned config block",), _index(block), trust)
        elif n == pinned:
            if block.header_hash != trust.config_block_hash:
                why_not = f"block {n} is not the pinned config block (its header hash differs)"
                out.problems.append(why_not)
            else:
                pinned_ok = True
            continue  # a config block: no windows
        else:
            try:
                if orderer_metadata(block)[1] == n:  # a config block: followed by later blocks
                    configs[(trust.channel, n)] = data
                checked = checker._block(trust, data, configs)[0]
            except FabricEvidenceError as exc:
                why_not = f"block {n}: {type(exc).__name__}: {exc}"
                out.problems.append(why_not)
        _read_block(out, checker, block, checked, why_not, chaincode, lane, seen_tx)
    # blocks before the pinned config block hold only if the header chain links them to it
    lowest = pinned
    while pinned_ok and lowest in given and lowest not in breaks and lowest - 1 in given:
        lowest -= 1
    unlinked = sorted(b for b in given if b < pinned and (not pinned_ok or b < lowest))
    if unlinked:
        out.problems.append(
            f"blocks {unlinked[0]}..{unlinked[-1]} come before the pinned config block {pinned}"
            " and are not linked to it by the header chain"
        )
        bad = set(unlinked)
        out.windows = [
            replace(w, problem=f"block {w.position[0]} is not authenticated (not linked to the pinned config block)")
            if w.position is not None and w.position[0] in bad
            else w
            for w in out.windows
        ]
    return out


@dataclass(frozen=True)
class TipRead:
    """An anchor-chaincode transaction that read a lane's tip, as parsed (nothing checked)."""

    index: int  # its place in the block
    tx_id: str
    lane: str  # its first argument
    read: tuple[int, int] | None  # the version of the lane's tip key it read (None: no tip)
    tip: bytes | None  # the lane's tip record it wrote (None: it wrote none, as a retry of the tip's own window)
    valid: bool  # the validation flag the exporting peer wrote says VALID (signed by nobody)


def tip_reads(data: bytes, chaincode: str = "anchor") -> list[TipRead]:
    """The transactions of a block that read a lane's tip, in block order: what a service scans to find a
    window's successor, and what locates a verified anchor's transaction (the first with its id)."""
    block = parse_block(data)
    flags = block.metadata[TRANSACTIONS_FILTER] if len(block.metadata) > TRANSACTIONS_FILTER else b""
    out: list[TipRead] = []
    for i, raw in enumerate(block.envelopes):
        parsed = _parse(raw, chaincode)
        if parsed is None or not parsed.args:
            continue
        lane = parsed.args[0].decode("utf-8", "replace")
        key = tip_key(lane)
        tip = next((value for k, value in parsed.tip_writes if k == key), None)
        valid = i < len(flags) and flags[i] == transaction_pb2.TxValidationCode.VALID
        out.extend(TipRead(i, parsed.tx_id, lane, v, tip, valid) for k, v in parsed.tip_reads if k == key)
    return out


def find_successor(
    blocks: Iterable[bytes],
    trust: ChannelTrust,
    lane: str,
    position: tuple[int, int],
    tip: bytes,
    chaincode: str = "anchor",
) -> ChainWindow | None:
    """The window among ``blocks`` (ascending) that succeeds the transaction at ``position`` (block,
    index) of an authenticated block, which wrote ``tip`` as ``lane``'s tip; None when none does.

    A successor passed the block and endorsement checks under ``trust`` (as for the monitor), read the
    lane's tip at exactly ``position``, and its arguments name the next sequence number and, as ``prev``,
    the SHA-256 of ``tip``: the chaincode accepted that only against the peers' committed tip, so the
    endorsing peers held that transaction committed, whatever flags the exporting peer wrote (spec §14.9)."""
    try:
        record = json.loads(tip)
        seq = record["seq"] if isinstance(record, dict) else None
    except (ValueError, RecursionError):
        seq = None
    if type(seq) is not int:
        return None
    prev = hashlib.sha256(tip).hexdigest()
    found = read_windows(blocks, trust, chaincode=chaincode, lane=lane)
    return next(
        (
            w
            for w in found.windows
            if w.problem is None
            and w.batch_index == 0
            and w.lane == lane
            and w.read_version == position
            and w.prev == prev
            and w.seq == seq + 1
        ),
        None,
    )


def _index(block: Block) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, raw in enumerate(block.envelopes):
        _, _, ch, _ = envelope_payload(raw, f"block {block.number} envelope {i}")
        if ch.tx_id:
            index.setdefault(str(ch.tx_id), i)
    return index


def _read_block(
    out: ChannelWindows,
    checker: FabricChecker,
    block: Block,
    checked: CheckedBlock | None,
    why_not: str | None,
    chaincode: str,
    lane: str | None,
    seen_tx: set[str],
) -> None:
    n = block.number
    flags = block.metadata[TRANSACTIONS_FILTER] if len(block.metadata) > TRANSACTIONS_FILTER else b""
    if len(flags) != len(block.envelopes):
        out.problems.append(
            f"block {n} has {len(flags)} validation flags for {len(block.envelopes)} transactions"
            " (fetch blocks from a peer: an orderer's copy has none); every transaction is taken as flagged valid"
        )
    for i, raw in enumerate(block.envelopes):
        parsed = _parse(raw, chaincode)
        if parsed is None or (parsed.fn not in (APPEND_WINDOW, APPEND_WINDOWS) and not parsed.tip_writes):
            continue
        tx_lane = parsed.args[0].decode("utf-8", "replace") if parsed.args else None
        if lane is not None and tx_lane != lane:
            continue
        code = transaction_pb2.TxValidationCode.Name(flags[i]) if i < len(flags) else VALID
        repeated = parsed.tx_id in seen_tx or (checked is not None and checked.tx_index.get(parsed.tx_id) != i)
        seen_tx.add(parsed.tx_id)
        endorsed, tx = _endorsed(checker, checked, why_not, parsed.tx_id, n, chaincode)
        listed = ListedTx(
            n,
            i,
            parsed.tx_id,
            code,
            tx_lane,
            _arg(parsed.args, 1),
            _arg(parsed.args, 3),
            endorsed,
            "",
        )
        if code != VALID:
            out.left_out.append(replace(listed, note="flagged invalid by the peer: left out of the chain"))
            continue
        if not parsed.tip_writes and parsed.fn in (APPEND_WINDOW, APPEND_WINDOWS):  # wrote nothing: moves no chain
            out.left_out.append(replace(listed, note="a retry of the tip's own window: it wrote nothing"))
            continue
        where = f"{out.channel} block {n} tx {i}"
        problem = why_not or (None if tx is not None else endorsed)
        if problem is None and repeated:
            problem = f"tx id {parsed.tx_id[:16]}… repeats an earlier transaction's, yet it is flagged valid"
        windows = _windows(parsed, where, (n, i), problem)
        if windows[0].problem is None and tx is not None:
            found = _records_problem(windows, tx)
            if found is not None:
                windows = [replace(w, problem=found) for w in windows]
        out.windows.extend(windows)


def _arg(args: list[bytes], i: int) -> str | None:
    return args[i].decode("utf-8", "replace") if len(args) > i else None


def _endorsed(
    checker: FabricChecker,
    checked: CheckedBlock | None,
    why_not: str | None,
    tx_id: str,
    n: int,
    chaincode: str,
) -> tuple[str, CheckedTx | None]:
    """("endorsed by ...", the checked tx) or (why its evidence fails, None)."""
    if checked is None:
        return f"not checked: {why_not}", None
    anchor = FabricAnchor("", checked.trust.channel, tx_id, n, "", chaincode)
    try:
        tx = checker._tx(checked.trust, checked, anchor)
    except FabricEvidenceError as exc:
        return f"{type(exc).__name__}: {exc}", None
    return f"endorsed by {', '.join(tx.endorsers)}", tx


def _parse(raw: bytes, chaincode: str) -> _Parsed | None:
    """The anchor chaincode's invocation in an endorser transaction; None for anything else."""
    try:
        env = common_pb2.Envelope.FromString(raw)
        payload = common_pb2.Payload.FromString(env.payload)
        ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        if ch.type != ENDORSER_TRANSACTION:
            return None
        tx = transaction_pb2.Transaction.FromString(payload.data)
        if len(tx.actions) != 1:
            return None
        cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
        cpp = proposal_pb2.ChaincodeProposalPayload.FromString(cap.chaincode_proposal_payload)
        spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(cpp.input).chaincode_spec
        if spec.chaincode_id.name != chaincode or not spec.input.args:
            return None
        prp = proposal_response_pb2.ProposalResponsePayload.FromString(cap.action.proposal_response_payload)
        action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
        rwset = rwset_pb2.TxReadWriteSet.FromString(action.results)
        writes: list[tuple[str, bytes]] = []
        reads: list[tuple[str, tuple[int, int] | None]] = []
        for ns in rwset.ns_rwset:
            if ns.namespace != chaincode:
                continue
            kv = kv_rwset_pb2.KVRWSet.FromString(ns.rwset)
            writes += [(str(w.key), bytes(w.value)) for w in kv.writes if w.key.startswith(TIP_PREFIX)]
            for r in kv.reads:
                if r.key.startswith(TIP_PREFIX):
                    version = (int(r.version.block_num), int(r.version.tx_num)) if r.HasField("version") else None
                    reads.append((str(r.key), version))
    except DecodeError:
        return None
    args = [bytes(a) for a in spec.input.args]
    return _Parsed(str(ch.tx_id), args[0].decode("utf-8", "replace"), args[1:], writes, reads, bytes(action.events))


def _windows(p: _Parsed, where: str, position: tuple[int, int], problem: str | None) -> list[ChainWindow]:
    """The windows a valid-flagged transaction presents (``AppendWindows``: several, in order); ``problem``
    says why they cannot be chained."""
    if p.fn != APPEND_WINDOWS:
        return [_window(p, where, position, problem)]
    count, extra = divmod(len(p.args) - 1, WINDOW_ARGS)
    if count < 1 or extra:
        return [_window(p, where, position, problem or f"an AppendWindows transaction with {len(p.args)} arguments")]
    records = batch_records(p.events)
    if problem is None and (records is None or len(records) != count):
        got = "no AppendWindows event" if records is None else f"{len(records)} records in its event"
        problem = f"the transaction appends {count} windows but holds {got}"
    lane = p.args[0]
    tip = tip_key(lane.decode("utf-8", "replace"))
    if problem is None and records and p.tip_writes != [(tip, records[-1])]:
        problem = "the tip the transaction wrote is not the last record of its AppendWindows event"
    out: list[ChainWindow] = []
    for i in range(count):
        args = [lane, *p.args[1 + i * WINDOW_ARGS : 1 + (i + 1) * WINDOW_ARGS]]
        record = records[i] if records is not None and i < len(records) else b""
        why = problem
        if i > 0:
            if why is None and args[2]:
                why = f"window {i} of the transaction names a prev; only the first may (the chaincode links the rest)"
            args[2] = _member(record, "prev").encode()  # the link the chaincode made, checked by the replay
        part = replace(p, fn=APPEND_WINDOW, args=args)
        w = _window(part, f"{where} window {i}", position, why, record=record)
        out.append(replace(w, batch_index=i, read_version=w.read_version if i == 0 else None))
    return out


def _member(record: bytes, name: str) -> str:
    try:
        doc = json.loads(record)
    except (ValueError, RecursionError):
        return ""
    value = doc.get(name) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def _window(
    p: _Parsed, where: str, position: tuple[int, int], problem: str | None, *, record: bytes | None = None
) -> ChainWindow:
    """The window a valid-flagged transaction presents; ``problem`` says why it cannot be chained."""
    a = [x.decode("utf-8", "replace") for x in p.args]
    if problem is None and (p.fn != APPEND_WINDOW or len(a) != 10):
        problem = f"a {p.fn} transaction with {len(a)} arguments writes a chain tip; only AppendWindow (10) may"
    a += [""] * (10 - len(a))
    lane = a[0]
    if record is None:  # AppendWindow: the tip it wrote (AppendWindows: the event's, the caller checked the tip)
        if len(p.tip_writes) == 1 and p.tip_writes[0][0] == tip_key(lane):
            record = p.tip_writes[0][1]
        elif problem is None:
            keys = ", ".join(repr(k) for k, _ in p.tip_writes) or "none"
            problem = (
                f"the transaction writes chain tip(s) {keys}; AppendWindow writes its lane's tip {tip_key(lane)!r}"
            )
    reads = [v for k, v in p.tip_reads if k == tip_key(lane)]
    if problem is None and (len(reads) != 1 or len(p.tip_reads) != 1):
        problem = f"the transaction reads {len(p.tip_reads)} chain tip(s); AppendWindow reads its lane's tip once"
    seq = int(a[1]) if _DECIMAL.fullmatch(a[1]) else -1
    size = int(a[8]) if _DECIMAL.fullmatch(a[8]) else -1
    if problem is None and (seq < 0 or size < 1):
        problem = f"seq {a[1]!r} or headsSize {a[8]!r} is not a decimal number"
    trees: list[Any] | None = None
    try:
        loaded = json.loads(a[6]) if a[6] else None
        trees = loaded if isinstance(loaded, list) else None
    except (ValueError, RecursionError):
        trees = None
    if problem is None and trees is None:
        problem = f"the trees argument is not a JSON list ({a[6]:.60})"
    return ChainWindow(
        lane=lane,
        seq=seq,
        prev=a[2],
        record=record or b"",
        window_id=a[3],
        window_start=a[4],
        window_end=a[5],
        heads_root=a[7],
        heads_size=size,
        proof=p.args[9] if len(p.args) > 9 else b"",
        where=where,
        position=position,
        read_version=reads[0] if reads else None,
        trees=trees,
        tx_id=p.tx_id,
        problem=problem,
    )


def _records_problem(windows: list[ChainWindow], tx: CheckedTx) -> str | None:
    """Each tree's anchor record (what receipts verify against) says what its window's arguments say."""
    wanted: dict[str, tuple[ChainWindow, dict[str, Any]]] = {}
    for w in windows:
        for t in w.trees or []:
            if isinstance(t, dict):
                wanted[f"{w.window_id}/{t.get('index')}"] = (w, t)
    if set(tx.records) != set(wanted):
        return f"the transaction wrote anchor keys {sorted(tx.records)}, its trees are {sorted(wanted)}"
    for key, rec in tx.records.items():
        w, t = wanted[key]
        got = (rec.get("root"), rec.get("tree_size"), rec.get("lane"), rec.get("chain_seq"), rec.get("heads_root"))
        want = (t.get("root"), t.get("size"), w.lane, w.seq, w.heads_root)
        if got != want:
            return f"the anchor record under {key} says (root, size, lane, seq, heads) {got}, the window {want}"
    if tx.tip is not None and tx.tip != windows[-1].record:
        return "the checked transaction's tip record is not the one parsed"
    return None
