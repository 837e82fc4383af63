"""Pure checks of the records an AppendWindows transaction carries (spec 14.8-14.9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_event_pb2, proposal_pb2

from receipt_verifier.errors import WriteSetError
from receipt_verifier.fabric.evidence import CheckedTx, _same_window, _writes, batch_records
from receipt_verifier.fabric.windows import _Parsed, _window, _windows, tip_key
from receipt_verifier.model import FabricAnchor


def _rec(window_id: str, seq: int) -> bytes:
    doc = {"window_id": window_id, "seq": seq, "lane": "l", "heads_root": "ab" * 32}
    doc |= {"window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:00:01Z"}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_the_event_of_several_windows_gives_one_record_per_line_and_nothing_else_does() -> None:
    lines = [_rec("w1", 1), _rec("w2", 2)]
    event = chaincode_event_pb2.ChaincodeEvent(event_name="AppendWindows", payload=b"\n".join(lines))
    assert batch_records(event.SerializeToString()) == tuple(lines)
    single = chaincode_event_pb2.ChaincodeEvent(event_name="AppendWindow", payload=lines[0])
    assert batch_records(single.SerializeToString()) is None
    assert batch_records(b"") is None and batch_records(b"\xff\xff") is None


def test_a_window_named_twice_has_no_record() -> None:
    tx = CheckedTx({}, (), "", _rec("w2", 2), (_rec("w1", 1), _rec("w2", 2)))
    assert tx.chain_record("w1") == (_rec("w1", 1), json.loads(_rec("w1", 1))) and tx.chain_record("w3") is None
    twice = CheckedTx({}, (), "", _rec("w1", 2), (_rec("w1", 1), _rec("w1", 2)))
    assert twice.chain_record("w1") is None


@pytest.mark.parametrize(
    ("member", "value"), [("chain_seq", 7), ("lane", "other"), ("window_end", "2026-01-02T00:00:00Z")]
)
def test_a_chain_record_that_contradicts_the_anchor_record_is_refused(member: str, value: object) -> None:
    chain = json.loads(_rec("w1", 1))
    anchor = {"chain_seq": 1, "lane": "l", "heads_root": "ab" * 32}
    anchor |= {"window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T00:00:01Z"}
    _same_window(chain, anchor, "w1/0")  # agreeing: nothing raised
    with pytest.raises(WriteSetError, match="the chain record of w1/0's window says"):
        _same_window(chain, {**anchor, member: value}, "w1/0")


@pytest.mark.parametrize("seq", ["²", "١٢", "01", "-1", ""])
def test_a_sequence_number_not_in_the_chaincodes_form_is_a_problem_not_a_crash(seq: str) -> None:
    lane = "l"
    record = _rec("w1", 1)
    args = [a.encode() for a in (lane, seq, "0" * 64, "w1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")]
    args += [b"[]", b"ab" * 32, b"2", b"{}"]
    parsed = _Parsed("t" * 64, "AppendWindow", args, [(tip_key(lane), record)], [(tip_key(lane), None)])
    window = _window(parsed, "here", (5, 0), None)
    assert window.seq == -1 and window.problem is not None and "is not a decimal number" in window.problem


def _append_windows(tip: bytes, records: list[bytes]) -> Any:
    """An AppendWindows chaincode action that writes ``tip`` as the lane's tip, its event holding ``records``."""
    kv = kv_rwset_pb2.KVRWSet(writes=[kv_rwset_pb2.KVWrite(key=tip_key("l"), value=tip)])
    rwset = rwset_pb2.TxReadWriteSet(
        ns_rwset=[rwset_pb2.NsReadWriteSet(namespace="anchor", rwset=kv.SerializeToString())]
    )
    event = chaincode_event_pb2.ChaincodeEvent(event_name="AppendWindows", payload=b"\n".join(records))
    action = proposal_pb2.ChaincodeAction(results=rwset.SerializeToString(), events=event.SerializeToString())
    action.response.status = 200
    action.chaincode_id.name = "anchor"
    return action


def test_the_tip_of_several_windows_is_the_last_record_of_their_event() -> None:
    """Spec section 14.9: the event's records are the windows' chain records only if the tip the transaction
    wrote (which the endorsers' write set proves) is the last of them; a record before it cannot be checked."""
    anchor = FabricAnchor("medical-history:t", "medical-history", "t" * 64, 5, "w2/0", "anchor")
    lines = [_rec("w1", 1), _rec("w2", 2)]
    _, tip, chain = _writes(_append_windows(lines[1], lines), anchor, "tx t")
    assert (tip, chain) == (lines[1], tuple(lines))
    for records in ([lines[1], lines[0]], [lines[0]], []):
        with pytest.raises(WriteSetError, match="tx t: the last record of its AppendWindows event is not the tip"):
            _writes(_append_windows(lines[1], records), anchor, "tx t")
    # the monitor's replay names the same transaction's windows as broken
    args = [b"l"]
    for i, w in enumerate(("w1", "w2")):
        args += [str(i + 1).encode(), b"0" * 64 if i == 0 else b"", w.encode(), b"2026-01-01T00:00:00Z"]
        args += [b"2026-01-01T00:00:01Z", b"[]", b"ab" * 32, b"2", b"{}"]
    for tip_written, problem in ((lines[1], None), (lines[0], "is not the last record of its AppendWindows event")):
        event = chaincode_event_pb2.ChaincodeEvent(event_name="AppendWindows", payload=b"\n".join(lines))
        reads = [(tip_key("l"), None)]
        parsed = _Parsed(
            "t" * 64, "AppendWindows", args, [(tip_key("l"), tip_written)], reads, event.SerializeToString()
        )
        windows = _windows(parsed, "here", (5, 0), None)
        assert [w.window_id for w in windows] == ["w1", "w2"]
        for w in windows:
            assert (w.problem is None) if problem is None else (w.problem is not None and problem in w.problem)
