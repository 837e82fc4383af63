"""The checks of a history bundle, each with the exact problem or error it must name (pure); head proofs are
in ``test_sorted_heads.py``, Fabric-anchored windows in ``test_history_fabric.py``."""

from __future__ import annotations

import base64
import copy
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receipt_verifier.errors import HistoryError, LedgerError, MalformedReceiptError
from receipt_verifier.history import (
    MAX_RECORDS,
    NO_APPEND_ONLY,
    HistoryReport,
    Record,
    _BindingDigests,
    _check_id,
    _id_binds,
    check_log,
    pack,
    verify_history,
)
from receipt_verifier.model import Binding, LedgerEntry
from receipt_verifier.proof_id import make_proof_id

from .histories import (
    AS_OF,
    DOMAIN,
    KEYS,
    KID,
    LOGS,
    OTHER,
    SUBJECT,
    WINDOW_END,
    bundle,
    entry,
    heads,
    local_anchor,
    log,
    records,
    window_change,
)


def _verify(doc: Any, **kw: Any) -> list[str]:
    if "ledger" in kw:  # a given ledger holds the bundle's own entry (or the bundle is not in it: see below)
        kw["ledger"] = [_own_entry(doc), *kw["ledger"]]
    report, _ = verify_history(doc, KEYS, as_of=kw.pop("as_of", AS_OF), **kw)
    return report.problems


def _own_entry(doc: Any) -> LedgerEntry:
    from receipt_verifier.codec import parse_entry

    return parse_entry(doc["window"]["anchors"][0]["entry"], "entry")


def test_with_a_ledger_the_bundle_entry_must_be_in_it_and_another_there_is_a_fork() -> None:
    doc = bundle(SUBJECT, LOGS)
    own = _own_entry(doc)
    later = _ledger_entry(1, "2025-11-21T08:01:00Z")
    assert verify_history(doc, KEYS, as_of=AS_OF, ledger=[own, later])[0].problems == []
    missing = verify_history(doc, KEYS, as_of=AS_OF, ledger=[later])[0].problems
    assert missing == [
        (
            "the window's ledger entry 0 is not in the given ledger (1 entries): the bundle came from a ledger"
            " the given one does not hold (fetch a newer ledger, or it is a fork)"
        )
    ]
    other = replace(own, root=hashlib.sha256(b"another tree").hexdigest())  # signed by the same key, same place
    forked = verify_history(doc, KEYS, as_of=AS_OF, ledger=[other, later])[0].problems
    assert forked == [
        f"fork: the given ledger's entry 0 differs from the bundle's (same key {KID}, same place: spec section 5.1)"
    ]


def test_a_complete_bundle_reports_every_field() -> None:
    report, recs = verify_history(bundle(SUBJECT, LOGS), KEYS, as_of=AS_OF)
    assert report.to_dict() == {
        "subject": SUBJECT,
        "domain": DOMAIN,
        "complete": True,
        "records": 3,
        "window_id": "w1763712120000",
        "window_end": WINDOW_END,
        "anchor": f"local ledger {KID} entry 0",
        "append_only": NO_APPEND_ONLY,
        "committed": None,
        "problems": [],
    }
    assert recs == [Record(i, r.hash, r.proof_id, r.nonce) for i, r in enumerate(LOGS[SUBJECT])]


def test_a_commit_proof_required_of_a_window_with_no_fabric_anchor_is_a_problem() -> None:
    report, _ = verify_history(bundle(SUBJECT, LOGS), KEYS, as_of=AS_OF, require_committed=True)
    assert report.problems == ["window w1763712120000 has no chained Fabric anchor whose commit could be proven"]


def test_a_subject_with_no_log_is_complete_and_empty() -> None:
    report, recs = verify_history(bundle("did:example:nobody", LOGS), KEYS, as_of=AS_OF)
    assert (report.complete, report.size, recs) == (True, 0, [])


def test_pack_is_the_columns_base64() -> None:
    assert pack([b"\x01" * 3, b"\x02" * 3]) == base64.b64encode(b"\x01\x01\x01\x02\x02\x02").decode("ascii")
    assert pack([]) == ""


def test_a_short_bundle_names_both_counts() -> None:
    mine = LOGS[SUBJECT]
    doc = bundle(SUBJECT, LOGS, shown=mine[:2])
    assert _verify(doc) == [
        "the bundle holds 2 records, but the log it names has 3",
        "newest record(s) missing: the log has 3, the bundle 2",
    ]


def test_entries_that_do_not_form_the_named_head() -> None:
    doc = bundle(SUBJECT, LOGS)
    root = "ab" * 32
    doc["log"]["root"] = root
    assert _verify(doc) == [
        "the log's entries do not form the head it names (size 3, root abababababababab…)",
        (
            "the log's head (size 3) is not the head anchored in window w1763712120000 (size 3):"
            " records were added, dropped or rewritten"
        ),
    ]


def test_a_gap_is_named_once_and_hides_newest_missing() -> None:
    mine = LOGS[SUBJECT]
    assert _verify(bundle(SUBJECT, LOGS, shown=[mine[0], mine[2]])) == [
        "the bundle holds 2 records, but the log it names has 3",
        "gap at sequence 1: 1 record(s) of the log left out",
    ]


def test_a_gap_before_the_last_of_several_records() -> None:
    mine = records(SUBJECT, 5)
    logs = {SUBJECT: mine}
    # positions hold records 0, 1, 3, 4: the gap is at 2, after the second record
    assert _verify(bundle(SUBJECT, logs, shown=[mine[0], mine[1], mine[3], mine[4]])) == [
        "the bundle holds 4 records, but the log it names has 5",
        "gap at sequence 2: 1 record(s) of the log left out",
    ]


def test_a_repeated_record_is_out_of_order_not_a_gap() -> None:
    mine = LOGS[SUBJECT]
    assert _verify(bundle(SUBJECT, LOGS, shown=[mine[0], mine[0], mine[2]])) == [
        "the log's entries do not form the head it names (size 3, root "
        + bundle(SUBJECT, LOGS)["log"]["root"][:16]
        + "…)",
        "records out of order: position 1 holds the log's record 0",
    ]


def test_swapped_records_name_the_first_misplaced_position() -> None:
    mine = LOGS[SUBJECT]
    doc = bundle(SUBJECT, LOGS, shown=[mine[0], mine[2], mine[1]])
    problems = _verify(doc)
    assert problems[1:] == ["records out of order: position 1 holds the log's record 2"]


def test_a_record_is_found_at_most_64_positions_away() -> None:
    mine = records(SUBJECT, 66)
    logs = {SUBJECT: mine}
    shown = list(mine)
    shown[0], shown[65] = mine[65], mine[0]  # 65 positions apart: each is taken for a stranger
    problems = _verify(bundle(SUBJECT, logs, shown=shown))
    assert problems[1:] == [
        f"record at sequence 0 is not a record of {SUBJECT} in {DOMAIN} (another subject or domain)",
        f"record at sequence 65 is not a record of {SUBJECT} in {DOMAIN} (another subject or domain)",
        "gap at sequence 0: 1 record(s) of the log left out",
    ]
    shown = list(mine)
    shown[1], shown[65] = mine[65], mine[1]  # 64 apart: found, and out of order
    assert _verify(bundle(SUBJECT, logs, shown=shown))[1:] == [
        "records out of order: position 1 holds the log's record 65"
    ]


def test_a_record_whose_id_does_not_bind_its_hash() -> None:
    mine = list(LOGS[SUBJECT])
    bad = mine[1]
    forged_pid = bytes(16)
    from receipt_verifier.logs import record_leaf

    from .histories import Rec

    mine[1] = Rec(bad.hash, forged_pid, bad.nonce, record_leaf(bad.nonce, forged_pid, bad.hash, DOMAIN, SUBJECT, 1))
    assert _verify(bundle(SUBJECT, {SUBJECT: mine, OTHER: LOGS[OTHER]})) == [
        "record at sequence 1: proof_id '00000000-0000-0000-0000-000000000000' is not an RFC 9562 version-1 UUID"
    ]
    good_shape = bytearray(LOGS[SUBJECT][0].proof_id)  # a real v1 id, issued for another hash
    mine[1] = Rec(
        bad.hash, bytes(good_shape), bad.nonce, record_leaf(bad.nonce, bytes(good_shape), bad.hash, DOMAIN, SUBJECT, 1)
    )
    text = bytes(good_shape).hex()
    text = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    assert _verify(bundle(SUBJECT, {SUBJECT: mine, OTHER: LOGS[OTHER]})) == [
        f"record at sequence 1: proof_id {text} was not issued for hash {bad.hash.hex()}: its node field does not match"
    ]


def test_problems_are_capped_at_fifty() -> None:
    def foreign(n: int) -> list[str]:
        mine = records(SUBJECT, n)
        strangers = records(OTHER, n)
        doc = bundle(SUBJECT, {SUBJECT: mine}, shown=strangers)
        doc["log"]["root"] = log(mine)["root"]  # only the foreign records are wrong
        report = HistoryReport(SUBJECT, DOMAIN)
        check_log(SUBJECT, DOMAIN, doc["log"], report)
        return report.problems

    exactly = foreign(49)  # 49 foreign records and the head they do not form: fifty, all listed
    assert len(exactly) == 50 and exactly[-1].startswith("record at sequence 48 is not a record of")
    over = foreign(60)
    assert len(over) == 51 and over[-1] == "... and 11 more problem(s) of the same kind"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(log=["x"]), "log: expected size, root, hashes, proof_ids, nonces, leaves"),
        (lambda d: d["log"].pop("nonces"), "log: expected size, root, hashes, proof_ids, nonces, leaves"),
        (lambda d: d["log"].update(size=-1), "log: size is an integer, root 64 hex"),
        (lambda d: d["log"].update(size=MAX_RECORDS + 1), "log: size is an integer, root 64 hex"),
        (lambda d: d["log"].update(size=True), "log: size is an integer, root 64 hex"),
        (lambda d: d["log"].update(root=5), "log: size is an integer, root 64 hex"),
        (lambda d: d["log"].update(root="zz"), "log.root is not hex"),
        (lambda d: d["log"].update(hashes=5), "log.hashes must be a base64 string"),
        (lambda d: d["log"].update(proof_ids="AA!A"), "log.proof_ids is not valid base64"),
        (
            lambda d: d["log"].update(nonces=d["log"]["nonces"][:-4] + "!" + d["log"]["nonces"][-4:]),
            "log.nonces is not valid base64",
        ),
        (lambda d: d["log"].update(leaves="AAAA"), "log.leaves holds 3 bytes, not a multiple of 32"),
        (
            lambda d: d["log"].update(nonces=pack([bytes(16)] * 2)),
            "log: hashes, proof_ids, nonces and leaves hold different counts",
        ),
    ],
    ids=range(12),
)
def test_malformed_logs_name_the_member(change: Any, message: str) -> None:
    doc = bundle(SUBJECT, LOGS)
    change(doc)
    with pytest.raises(MalformedReceiptError) as err:
        verify_history(doc, KEYS, as_of=AS_OF)
    assert str(err.value) == message


def test_the_largest_log_size_is_a_problem_not_malformed() -> None:
    doc = bundle(SUBJECT, LOGS)
    doc["log"]["size"] = MAX_RECORDS
    assert _verify(doc)[0] == f"the bundle holds 3 records, but the log it names has {MAX_RECORDS}"


def _malformed(doc: Any, message: str, **kw: Any) -> None:
    with pytest.raises(MalformedReceiptError) as err:
        verify_history(doc, KEYS, as_of=AS_OF, **kw)
    assert str(err.value) == message


def test_a_document_that_is_no_history_bundle() -> None:
    expected = "not a history bundle (@context https://w3id.org/health-receipt/history/v1, type HealthReceiptHistory)"
    for doc in (["x"], dict(bundle(SUBJECT, LOGS), type="Other"), dict(bundle(SUBJECT, LOGS), **{"@context": "x"})):
        _malformed(doc, expected)
    members = (
        "history bundle: expected the members @context, as_of, domain, fabric_blocks, head_proof, log, subject,"
        " type, window (fabric_blocks optional)"
    )
    _malformed(dict(bundle(SUBJECT, LOGS), extra=1), members)
    doc = bundle(SUBJECT, LOGS)
    del doc["as_of"]
    _malformed(doc, members)
    for key in ("subject", "domain", "as_of"):
        _malformed(dict(bundle(SUBJECT, LOGS), **{key: 5}), "history bundle: subject, domain and as_of are strings")


def test_fabric_blocks_may_be_given_empty() -> None:
    assert _verify(dict(bundle(SUBJECT, LOGS), fabric_blocks=[])) == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            dict(bundle(SUBJECT, LOGS), window=[1]),
            "window: expected exactly anchors, heads_root, heads_size, root, tree_index, tree_size, window_end, window_id",
        ),
        (
            window_change(extra=1),
            "window: expected exactly anchors, heads_root, heads_size, root, tree_index, tree_size, window_end, window_id",
        ),
        (window_change(tree_index="0"), "window: tree_index, tree_size, heads_size are integers; the rest strings"),
        (window_change(heads_size=-1), "window: tree_index, tree_size, heads_size are integers; the rest strings"),
        (window_change(window_id=7), "window: tree_index, tree_size, heads_size are integers; the rest strings"),
        (window_change(heads_root="AB" * 32), "window: root and heads_root are 64 lowercase hex characters"),
        (window_change(root="ab" * 31), "window: root and heads_root are 64 lowercase hex characters"),
        (window_change(window_end="yesterday"), "window.window_end: 'yesterday' is not an RFC 3339 time"),
        (window_change(anchors=[]), "window.anchors: a list of 1 to 16 anchors"),
        (window_change(anchors={"a": 1}), "window.anchors: a list of 1 to 16 anchors"),
        (
            window_change(anchors=[local_anchor(entry(heads(LOGS)))] * 2),
            "window.anchors: lists the same anchor (type and anchor_id) twice",
        ),
    ],
    ids=range(11),
)
def test_malformed_windows_name_the_member(doc: Any, message: str) -> None:
    _malformed(doc, message)


def test_a_malformed_anchor_names_its_position() -> None:
    tree = heads(LOGS)
    doc = window_change(anchors=[local_anchor(entry(tree)), {"type": "local"}])
    with pytest.raises(MalformedReceiptError, match=r"^window\.anchors\[1\]"):
        verify_history(doc, KEYS, as_of=AS_OF)


def test_sixteen_anchors_are_allowed_and_each_verified_one_is_named() -> None:
    tree = heads(LOGS)
    anchors = [local_anchor(entry(tree, seq=i)) for i in range(16)]
    report, _ = verify_history(window_change(anchors=anchors), KEYS, as_of=AS_OF)
    assert report.anchor == ", ".join(f"local ledger {KID} entry {i}" for i in range(16))
    _malformed(
        window_change(anchors=[*anchors, local_anchor(entry(tree, seq=16))]),
        "window.anchors: a list of 1 to 16 anchors",
    )


def test_an_anchor_that_signs_another_window_is_a_hard_failure() -> None:
    tree = heads(LOGS)
    cases = [
        entry(tree, window_id="w-other"),
        entry(tree, tree_index=1),
        entry(tree, tree_size=6),
        entry(tree, root="cd" * 32),
        entry(tree, window_end="2025-11-21T08:02:02Z"),
        entry(tree, heads_root="ef" * 32),
        entry(tree, heads_size=3),
        entry(tree, domain="insurance"),
    ]
    for e in cases:
        doc = window_change(anchors=[local_anchor(e)])
        with pytest.raises(HistoryError) as err:
            verify_history(doc, KEYS, as_of=AS_OF)
        assert str(err.value) == f"local anchor {KID}:0 signs another window, domain or heads than the bundle's", e


def test_a_bad_signature_is_a_ledger_error() -> None:
    doc = bundle(SUBJECT, LOGS)
    doc["window"]["anchors"][0]["signature"] = "00" * 64
    with pytest.raises(LedgerError, match="signature invalid"):
        verify_history(doc, KEYS, as_of=AS_OF)


def _ledger_entry(seq: int, window_end: str, domain: str | None = DOMAIN, v2: bool = True) -> LedgerEntry:
    return LedgerEntry(
        seq,
        "00" * 32,
        f"w-{seq}",
        0,
        1,
        "11" * 32,
        window_end,
        window_end,
        window_end,
        domain if v2 else None,
        ("22" * 32) if v2 else None,
        1 if v2 else None,
    )


def test_a_newer_window_in_the_pinned_ledger_makes_the_head_old() -> None:
    doc = bundle(SUBJECT, LOGS)
    newer = [
        _ledger_entry(1, "2025-11-21T08:05:00Z"),
        _ledger_entry(2, "2025-11-21T08:07:00Z"),
        _ledger_entry(3, "2025-11-21T08:06:00Z"),
        _ledger_entry(4, "2025-11-21T08:09:00Z", domain="insurance"),  # another domain
        _ledger_entry(5, "2025-11-21T08:09:00Z", v2=False),  # a v1 tree has no heads
        _ledger_entry(6, "2025-11-21T09:00:00.000001Z"),  # after the time of judgement
    ]
    assert _verify(doc, ledger=newer) == [
        (
            "a head older than the newest anchored window given: window w-2 (ledger entry 2,"
            " ended 2025-11-21T08:07:00Z) is newer than w1763712120000"
        )
    ]
    assert _verify(doc, ledger=[_ledger_entry(7, "2025-11-21T09:00:00Z")])[0].startswith(
        "a head older than the newest anchored window given: window w-7"
    )
    assert _verify(doc, ledger=[_ledger_entry(8, WINDOW_END)]) == []  # the same end is not newer
    assert _verify(doc, ledger=newer[3:]) == []


def test_as_of_defaults_to_now_and_is_used_when_given() -> None:
    doc = bundle(SUBJECT, LOGS)
    later = [_ledger_entry(1, "2026-01-01T00:00:00Z")]
    assert _verify(doc, ledger=later) == []  # judged as of AS_OF (2025)
    report, _ = verify_history(doc, KEYS, ledger=[_own_entry(doc), *later])
    assert report.problems[0].startswith("a head older than the newest anchored window given: window w-1")


def test_max_age_is_measured_from_the_window_end() -> None:
    doc = bundle(SUBJECT, LOGS)
    end = datetime(2025, 11, 21, 8, 2, 1, tzinfo=UTC)
    assert _verify(doc, as_of=end + timedelta(hours=1), max_age=timedelta(hours=1)) == []
    assert _verify(doc, as_of=end + timedelta(hours=1, microseconds=1), max_age=timedelta(hours=1)) == [
        f"stale: window w1763712120000 ended {WINDOW_END}, more than 1:00:00 ago"
    ]


def test_a_ledger_entry_with_an_impossible_time_is_refused() -> None:
    bad = _ledger_entry(9, "2025-13-45T08:00:00Z")
    _malformed(
        bundle(SUBJECT, LOGS),
        "ledger entry 9: window_end: '2025-13-45T08:00:00Z' is not an RFC 3339 time",
        ledger=[bad],
    )


def test_growth_against_an_older_bundle() -> None:
    mine = records(SUBJECT, 4)
    old = bundle(SUBJECT, {SUBJECT: mine[:2]})
    new = bundle(SUBJECT, {SUBJECT: mine})
    assert _verify(new, previous=old) == []
    assert _verify(old, previous=new) == ["forked log: it shrank from 4 records to 2"]
    rewritten = copy.deepcopy(old)
    leaves = base64.b64decode(rewritten["log"]["leaves"])
    rewritten["log"]["leaves"] = base64.b64encode(leaves[:32] + bytes(32)).decode()
    assert _verify(new, previous=rewritten) == [
        "forked log: record 1 differs from the older bundle's (the log was rewritten, it did not only grow)"
    ]
    for prev, message in (
        (dict(old, log=None), "--previous: its log has no leaves"),
        (dict(old, log={"size": 2}), "--previous: its log has no leaves"),
        (dict(old, log={"leaves": "!!"}), "--previous: log.leaves is not valid base64"),
        (dict(old, type="Other"), "--previous: not a history bundle"),
        (dict(old, domain="insurance"), "--previous: a bundle of another subject or domain"),
    ):
        _malformed(new, message, previous=prev)


def test_a_subject_named_like_a_problem_still_gets_newest_missing() -> None:
    subject = "did:example:gap-order"
    mine = records(subject, 3)
    doc = bundle(subject, {subject: mine}, shown=[mine[0], records(OTHER, 3)[1]])
    assert _verify(doc) == [
        "the bundle holds 2 records, but the log it names has 3",
        f"record at sequence 1 is not a record of {subject} in {DOMAIN} (another subject or domain)",
        "newest record(s) missing: the log has 3, the bundle 2",
    ]


def test_two_newest_windows_ending_together_name_the_first() -> None:
    doc = bundle(SUBJECT, LOGS)
    tied = [_ledger_entry(4, "2025-11-21T08:05:00Z"), _ledger_entry(3, "2025-11-21T08:05:00Z")]
    assert _verify(doc, ledger=tied) == [
        (
            "a head older than the newest anchored window given: window w-4 (ledger entry 4,"
            " ended 2025-11-21T08:05:00Z) is newer than w1763712120000"
        )
    ]


@given(
    domain=st.text(min_size=1, max_size=20),
    subject=st.text(min_size=1, max_size=40),
    seq=st.integers(min_value=0, max_value=2**53),
)
def test_binding_digests_of_one_log_equal_the_bindings(domain: str, subject: str, seq: int) -> None:
    assert _BindingDigests(domain, subject).at(seq) == Binding(domain, subject, seq).digest()


@given(
    ticks=st.integers(min_value=0, max_value=2**60 - 1), clock=st.integers(0, 2**14 - 1), flip=st.integers(0, 16 * 8)
)
def test_the_quick_id_check_agrees_with_the_named_one(ticks: int, clock: int, flip: int) -> None:
    """A proof id of the hash binds it; one bit flipped anywhere (flip < 128) binds it only if the
    named check also finds nothing to report."""
    h = hashlib.sha256(str((ticks, clock)).encode()).digest()
    pid = bytearray(make_proof_id(ticks, clock, h.hex()).bytes)
    if flip < 128:
        pid[flip // 8] ^= 1 << (flip % 8)
    report = HistoryReport(subject="s", domain="d")
    _check_id(bytes(pid), h, 0, report)
    assert _id_binds(bytes(pid), h) == (not report.problems), report.problems
