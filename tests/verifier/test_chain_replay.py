"""Replay of chained windows (spec 14.7-14.9), pure: a lane built with the service's transition builder
replays; each broken copy stops its lane at the broken window and names the rule it breaks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import pytest

from receipt_verifier.chain import BATCHED, COMMITTED, TIP, TIP_NO_SUCCESSOR, ChainWindow, replay
from tests.service.fabric.chainlane import ChainLane, heads_of, now, records

A, B, C = "did:example:alice-0001", "did:example:bob-0002", "did:example:carol-0003"


def record_of(args: list[str], tx_id: str) -> bytes:
    """The tip record the chaincode writes for these AppendWindow arguments (Go's json.Marshal form)."""
    lane, seq, prev, window_id, start, end, trees, heads_root, heads_size, proof = args
    doc = {
        "v": 1,
        "lane": lane,
        "seq": int(seq),
        "prev": prev,
        "window_id": window_id,
        "trees": json.loads(trees),
        "heads_root": heads_root,
        "heads_size": int(heads_size),
        "window_start": start,
        "window_end": end,
        "proof_hash": hashlib.sha256(proof.encode()).hexdigest(),
        "tx_id": tx_id,
        "tx_time": now(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def window_of(
    args: list[str], record: bytes, n: int, read: tuple[int, int] | None, *, tx: int = 0, fabric: bool = True
) -> ChainWindow:
    lane, seq, prev, window_id, start, end, trees, heads_root, heads_size, proof = args
    return ChainWindow(
        lane=lane,
        seq=int(seq),
        prev=prev,
        record=record,
        window_id=window_id,
        window_start=start,
        window_end=end,
        heads_root=heads_root,
        heads_size=int(heads_size),
        proof=proof,
        where=f"medical-history block {n} tx {tx}" if fabric else f"ledger entry {n}",
        position=(n, tx) if fabric else None,
        read_version=read if fabric else None,
        trees=json.loads(trees),
        tx_id=json.loads(record)["tx_id"],
    )


GROWTH: list[dict[str, list[bytes]]] = [
    {A: records(2), B: records(1)},
    {A: records(1), C: records(2)},
    {},  # an empty window: no change, no tree
    {B: records(3)},
    {A: records(1), "did:example:dan-0004": records(1)},
]


def build(lane: ChainLane | None = None, *, fabric: bool = True) -> tuple[ChainLane, list[ChainWindow]]:
    """A lane of five windows (blocks 10, 11, ...), each the successor of the one before."""
    lane = lane or ChainLane(name="medical-history")
    out: list[ChainWindow] = []
    read: tuple[int, int] | None = None
    for i, grow in enumerate(GROWTH):
        logs = lane.grown(grow)
        args = lane.args(logs, trees=0 if not grow else 2)
        record = record_of(args, os.urandom(32).hex())
        out.append(window_of(args, record, 10 + i, read, fabric=fabric))
        read = (10 + i, 0)
        lane.accept(record, logs)
    return lane, out


def test_a_valid_chain_replays() -> None:
    _, windows = build()
    report = replay(windows)
    assert report.ok
    lane = report.lanes["medical-history"]
    assert (lane.checked, lane.first_seq, lane.bad) == (5, 0, None)
    assert [w.status for w in lane.windows] == [COMMITTED] * 4 + [TIP_NO_SUCCESSOR]
    tip = lane.tip
    assert tip is not None and tip.seq == 4 and tip.window_end == windows[-1].window_end
    assert (lane.windows[0].inserted, lane.windows[1].updated, lane.windows[1].inserted) == (2, 1, 1)
    doc = report.to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["ok"] is True
    assert doc["lanes"][0]["verdict"] == f"ok; {TIP_NO_SUCCESSOR}"


def test_ledger_windows_replay_without_fabric_checks() -> None:
    _, windows = build(fabric=False)
    lane = replay(windows).lanes["medical-history"]
    assert lane.ok and lane.checked == 5
    assert lane.windows[-1].status == TIP and lane.windows[-1].where == "ledger entry 14"


def test_lanes_are_replayed_apart() -> None:
    _, one = build(ChainLane(name="medical-history"))
    _, two = build(ChainLane(name="_"))
    broken = [*one, *two]
    broken[7] = dataclasses.replace(broken[7], seq=9)  # lane "_" seq 2
    mixed = [w for pair in zip(broken[:5], broken[5:], strict=True) for w in pair]
    report = replay(mixed)
    assert report.lanes["medical-history"].ok and not report.lanes["_"].ok and not report.ok
    assert report.lanes["_"].checked == 2


def _edit_proof(w: ChainWindow, edit: Any) -> ChainWindow:
    proof = json.loads(w.proof)
    edit(proof)
    text = json.dumps(proof)
    rec = json.loads(w.record)
    rec["proof_hash"] = hashlib.sha256(text.encode()).hexdigest()
    return dataclasses.replace(w, proof=text, record=json.dumps(rec, separators=(",", ":")).encode())


def _record(w: ChainWindow, **change: Any) -> ChainWindow:
    rec = json.loads(w.record) | change
    return dataclasses.replace(w, record=json.dumps(rec, separators=(",", ":")).encode())


def _consistent(w: ChainWindow, **change: Any) -> ChainWindow:
    """The window with arguments and record changed alike (a forger keeps them consistent)."""
    return _record(dataclasses.replace(w, **change), **change)


def _dropping_window(lane_before: ChainLane, windows: list[ChainWindow]) -> ChainWindow:
    """Window 3 again, but its heads drop A's newest record (a shrunk log, with the forged proof)."""
    logs = {s: list(e) for s, e in lane_before.logs.items()}
    logs[A] = logs[A][:-1]
    args = lane_before.args(logs, trees=2)
    return window_of(args, record_of(args, os.urandom(32).hex()), 13, (12, 0))


def _breaks() -> list[tuple[str, Any, str, str]]:
    """(name, how to break the chain, the rule named, a fragment of the reason)."""
    return [
        ("seq skip", lambda ws: ws.__setitem__(3, _consistent(ws[3], seq=4)), "sequence", "does not follow"),
        (
            "prev mismatch",
            lambda ws: ws.__setitem__(3, _consistent(ws[3], prev="ab" * 32)),
            "previous hash",
            "is not the SHA-256 of the previous record",
        ),
        (
            "start gap",
            lambda ws: ws.__setitem__(3, _consistent(ws[3], window_start=now(-3600))),
            "gap in time",
            "is not the previous window's end",
        ),
        (
            "proof hash mismatch",
            lambda ws: ws.__setitem__(3, dataclasses.replace(ws[3], proof=ws[3].proof + " ")),
            "record",
            "proof_hash",
        ),
        (
            "record says another heads root",
            lambda ws: ws.__setitem__(3, _record(ws[3], heads_root="00" * 32)),
            "record",
            "heads_root",
        ),
        (
            "transition from other heads",
            lambda ws: ws.__setitem__(3, _edit_proof(ws[3], lambda p: p["changed"][0].update(root="00" * 32))),
            "transition",
            "the old heads root is not the tip's",
        ),
        (
            "a window that ends after its transaction",
            lambda ws: ws.__setitem__(3, _record(ws[3], tx_time=now(-60))),
            "time",
            "is more than 10 s after its transaction",
        ),
        (
            "successor read another version",
            lambda ws: ws.__setitem__(3, dataclasses.replace(ws[3], read_version=(12, 1))),
            "successor",
            "holds the tip at block 12 tx 1, not the tip at block 12 tx 0",
        ),
        (
            "first window read a tip",
            lambda ws: ws.__setitem__(0, dataclasses.replace(ws[0], read_version=(3, 0))),
            "successor",
            "not no tip",
        ),
    ]


@pytest.mark.parametrize(("name", "brk", "check", "reason"), _breaks(), ids=[b[0] for b in _breaks()])
def test_a_broken_copy_is_named(name: str, brk: Any, check: str, reason: str) -> None:
    _, windows = build()
    brk(windows)
    lane = replay(windows).lanes["medical-history"]
    assert not lane.ok and lane.check == check, (name, lane.verdict)
    bad = lane.bad
    assert bad is not None and reason in (bad.reason or ""), (name, bad.reason)
    broken_at = 0 if name == "first window read a tip" else 3
    assert bad.seq == windows[broken_at].seq and lane.checked == broken_at
    assert [w.status for w in lane.windows[broken_at + 1 :]] == ["not checked"] * (4 - broken_at)
    assert lane.verdict.startswith(f"BAD at seq {bad.seq} (medical-history block {10 + broken_at} tx 0)")


def test_a_transition_that_drops_a_record_is_refused() -> None:
    lane = ChainLane(name="medical-history")
    windows: list[ChainWindow] = []
    read = None
    for i, grow in enumerate(GROWTH[:3]):
        logs = lane.grown(grow)
        args = lane.args(logs, trees=1)
        record = record_of(args, os.urandom(32).hex())
        windows.append(window_of(args, record, 10 + i, read))
        read = (10 + i, 0)
        lane.accept(record, logs)
    windows.append(_dropping_window(lane, windows))
    report = replay(windows).lanes["medical-history"]
    assert report.check == "transition" and report.bad is not None
    assert "the log of key" in (report.bad.reason or "") and "shrank from 3 to 2 records" in (report.bad.reason or "")
    assert heads_of(lane.logs).size == 4


def test_a_window_of_an_invalidated_transaction_placed_in_the_chain() -> None:
    """Two successors of one tip were endorsed; the loser (flagged MVCC_READ_CONFLICT, tx 1 of block 13) is
    presented in place of the winner. The next window read the winner's write: its read version names it."""
    loser_lane = ChainLane(name="medical-history")
    rebuilt: list[ChainWindow] = []
    read = None
    for i, grow in enumerate(GROWTH[:3]):
        logs = loser_lane.grown(grow)
        args = loser_lane.args(logs, trees=1)
        record = record_of(args, os.urandom(32).hex())
        rebuilt.append(window_of(args, record, 10 + i, read))
        read = (10 + i, 0)
        loser_lane.accept(record, logs)
    winner_logs, loser_logs = loser_lane.grown({B: records(1)}), loser_lane.grown({C: records(1)})
    winner_args, loser_args = loser_lane.args(winner_logs), loser_lane.args(loser_logs)
    winner = window_of(winner_args, record_of(winner_args, os.urandom(32).hex()), 13, (12, 0))
    loser = window_of(loser_args, record_of(loser_args, os.urandom(32).hex()), 13, (12, 0), tx=1)
    # the next window, as endorsed against the committed state: it read the winner's write (block 13 tx 0);
    # its arguments claim the loser as their predecessor
    loser_lane.accept(loser.record, loser_logs)
    next_args = loser_lane.args(loser_lane.grown({A: records(1)}))
    successor = window_of(next_args, record_of(next_args, os.urandom(32).hex()), 14, (13, 0))
    assert replay([*rebuilt, winner]).ok
    report = replay([*rebuilt, loser, successor]).lanes["medical-history"]
    assert report.check == "successor" and report.bad is not None and report.bad.seq == 4
    assert "holds the tip at block 13 tx 0, not the tip at block 13 tx 1" in (report.bad.reason or "")


def test_evidence_problems_stop_the_lane() -> None:
    _, windows = build()
    windows[2] = dataclasses.replace(windows[2], problem="EndorsementError: endorsed by nobody")
    lane = replay(windows).lanes["medical-history"]
    assert lane.check == "evidence" and lane.checked == 2
    assert lane.bad is not None and lane.bad.reason == "evidence: EndorsementError: endorsed by nobody"


def batched(windows: list[ChainWindow], block: int, first: int, count: int) -> list[ChainWindow]:
    """Windows ``first``..``first+count-1`` moved into one AppendWindows transaction at (block, 0): they
    share its position, only the first keeps a read, and later windows read the transaction's."""
    out = list(windows)
    for k in range(count):
        w = out[first + k]
        out[first + k] = dataclasses.replace(
            w, position=(block, 0), batch_index=k, read_version=w.read_version if k == 0 else None
        )
    if first + count < len(out):
        out[first + count] = dataclasses.replace(out[first + count], read_version=(block, 0))
    return out


def test_windows_of_one_transaction_replay_and_commit_together() -> None:
    _, windows = build()
    report = replay(batched(windows, 11, 1, 3)).lanes["medical-history"]  # seqs 1-3 in one transaction
    assert report.ok, report.to_dict()
    assert [w.status for w in report.windows] == [COMMITTED] * 4 + [TIP_NO_SUCCESSOR]
    newest = replay(batched(windows, 11, 2, 3)).lanes["medical-history"]  # the newest transaction: 2-4
    assert [w.status for w in newest.windows] == [COMMITTED, COMMITTED, BATCHED, BATCHED, TIP_NO_SUCCESSOR]


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        (
            "the second window is placed in another transaction",
            lambda ws: [ws[0], ws[1], dataclasses.replace(ws[2], position=(99, 0)), *ws[3:]],
        ),
        (
            "the windows are presented out of their order",
            lambda ws: [ws[0], ws[1], dataclasses.replace(ws[2], batch_index=2), *ws[3:]],
        ),
        ("a window of the transaction is left out", lambda ws: [ws[0], ws[1], *ws[3:]]),
    ],
)
def test_a_broken_transaction_of_several_windows_is_named(what: str, edit: Any) -> None:
    _, windows = build()
    report = replay(edit(batched(windows, 11, 1, 3))).lanes["medical-history"]
    assert not report.ok, what
    assert report.check in ("successor", "sequence", "previous hash"), (what, report.check)
    assert report.bad is not None and report.bad.seq in (2, 3), (what, report.bad)
