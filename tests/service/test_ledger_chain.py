"""A domain's windows chained on the local ledger (spec section 14.7): the operator holds the ledger
key, so it can sign anything; what it cannot do is make a reopened ledger (or a monitor) accept a
window that drops a record, skips a place, leaves a gap in time or lacks its proof."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from receipt_service.errors import ConflictError
from receipt_service.ledger import PROOFS_FILE, LocalLedger, TreeRoot, WindowProof, check_lanes, ledger_entry
from receipt_service.transition import build_transition
from receipt_verifier import LedgerError
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.ledger import SignedEntry, entry_hash, sign_entry
from receipt_verifier.merkle import consistency_proof
from tests.service.fabric.chainlane import forge_transition, heads_of

DOMAIN = "medical-history"
A, B = "did:example:alice-0001", "did:example:bob-0002"


def _t(n: int) -> str:
    return f"2026-01-01T00:00:{n:02d}.000000Z"


class Lane:
    """The honest service's side: logs, and the windows it appends."""

    def __init__(self, ledger: LocalLedger) -> None:
        self.ledger = ledger
        self.logs: dict[str, list[bytes]] = {}
        self.n = 0
        self.refused = ""

    def window(self, grow: dict[str, int], *, forge: dict[str, list[bytes]] | None = None, trees: int = 1) -> None:
        new = {s: list(v) for s, v in self.logs.items()}
        for s, k in grow.items():
            new.setdefault(s, []).extend(os.urandom(32) for _ in range(k))
        if forge is not None:
            new.update(forge)
        old_h, new_h = heads_of(self.logs), heads_of(new)
        try:
            consistency = {
                _key(s): consistency_proof([leaf_hash(e) for e in new[s]], len(self.logs[s]))
                for s in new
                if s in self.logs and len(new[s]) > len(self.logs[s])
            }
            proof = build_transition(old_h, new_h, consistency)
        except ValueError:
            proof = forge_transition(old_h, new_h)
        window_id = f"w{self.n}"
        roots = [
            TreeRoot(
                window_id, i, 2, os.urandom(32).hex(), _t(self.n), _t(self.n + 1), DOMAIN, new_h.root.hex(), new_h.size
            )
            for i in range(trees)
        ]
        tip = self.ledger.lane_tip(DOMAIN)
        seq = 0 if tip is None else tip.chain_seq + 1
        windowproof = WindowProof(DOMAIN, seq, window_id, json.dumps(proof))
        try:
            self.ledger.append_window(roots, windowproof, _t(self.n + 1))
        except LedgerError as exc:
            if forge is None:
                raise
            self.refused = str(exc)  # the service will not sign it: the operator signs it with the key itself
            with open(self.ledger.proofs_path, "a") as f:
                f.write(windowproof.to_json() + "\n")
            for root in roots:
                _sign_after(self.ledger, root, chain_seq=seq, proof_hash=windowproof.hash)
        self.logs, self.n = new, self.n + 1


def _key(subject: str) -> bytes:
    from receipt_verifier.heads import subject_key

    return subject_key(subject)


def test_a_chained_ledger_reopens_and_goes_on(tmp_path: Path) -> None:
    lane = Lane(LocalLedger(tmp_path))
    lane.window({A: 2, B: 1}, trees=2)
    lane.window({A: 1})
    again = LocalLedger(tmp_path)
    tip = again.lane_tip(DOMAIN)
    assert tip is not None and (tip.chain_seq, tip.window_id) == (1, "w1")
    entries = [e.entry for e in again.entries()]
    assert [(e.chain_seq, e.tree_index) for e in entries] == [(0, 0), (0, 1), (1, 0)]
    assert all(e.to_dict()["v"] == 3 for e in entries)
    lane.ledger = again
    lane.window({B: 1})
    reopened = LocalLedger(tmp_path).lane_tip(DOMAIN)
    assert reopened is not None and reopened.chain_seq == 2
    with pytest.raises(ConflictError, match="unchained entry would break it"):  # no downgrade at write time
        again.append(TreeRoot("w9", 0, 1, "ab" * 32, _t(9), _t(9), DOMAIN, "cd" * 32, 3), _t(9))


def test_a_proof_line_torn_by_a_crash_is_cut_so_the_next_window_still_opens(tmp_path: Path) -> None:
    lane = Lane(LocalLedger(tmp_path))
    lane.window({A: 2})
    ledger = lane.ledger
    with open(ledger.proofs_path, "ab") as f:  # the crash: half a proof, no entries
        f.write(b'{"domain": "medical-history", "chain_seq": 1, "win')
    torn = ledger.proofs_path.stat().st_size
    lane.ledger = LocalLedger(tmp_path)  # a restart
    assert ledger.proofs_path.stat().st_size < torn and ledger.proofs_path.read_bytes().endswith(b"\n")
    lane.window({A: 1})
    tip = LocalLedger(tmp_path).lane_tip(DOMAIN)  # it opens: the next proof began on its own line
    assert tip is not None and tip.chain_seq == 1


def _sign_after(ledger: LocalLedger, root: TreeRoot, **fields: object) -> None:
    """The operator appends an entry signed with the ledger's own key, bypassing the service."""
    last = ledger.entries()[-1]
    entry = ledger_entry(root, last.entry.seq + 1, entry_hash(last.entry), _t(30))
    for k, v in fields.items():
        object.__setattr__(entry, k, v)
    key = ledger._key  # the operator holds ledger-key.pem
    with open(ledger.path, "a") as f:
        f.write(SignedEntry(entry, sign_entry(key, entry)).to_json() + "\n")


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("a window that drops A's newest record", "shrank"),
        ("a window that replaces B's record", "changed without growing"),
        ("an unchained entry after chained ones", "an unchained entry after chained window"),
        ("a window that skips a place", "chain position 3, but the domain's next is 2"),
        ("a window that starts after a gap", "a gap in time"),
        ("a window whose proof is not beside the ledger", "its transition proof is not in"),
    ],
)
def test_a_forged_window_stops_the_ledger_from_opening(tmp_path: Path, attack: str, reason: str) -> None:
    lane = Lane(LocalLedger(tmp_path))
    lane.window({A: 3, B: 1})
    lane.window({A: 1})
    ledger = lane.ledger
    tip = ledger.lane_tip(DOMAIN)
    assert tip is not None
    if attack == "a window that drops A's newest record":
        lane.window({}, forge={A: lane.logs[A][:-1]})
    elif attack == "a window that replaces B's record":
        lane.window({}, forge={B: [os.urandom(32)]})
    else:
        h = heads_of(lane.logs)
        root = TreeRoot("forged", 0, 1, "ab" * 32, tip.window_end, _t(29), DOMAIN, h.root.hex(), h.size)
        if attack == "an unchained entry after chained ones":
            _sign_after(ledger, root)
        elif attack == "a window that skips a place":
            _sign_after(ledger, root, chain_seq=3, proof_hash="00" * 32)
        elif attack == "a window that starts after a gap":
            gap = TreeRoot("forged", 0, 1, "ab" * 32, _t(28), _t(29), DOMAIN, h.root.hex(), h.size)
            _sign_after(ledger, gap, chain_seq=2, proof_hash="00" * 32)
        else:
            _sign_after(ledger, root, chain_seq=2, proof_hash="00" * 32)
    if attack.startswith(("a window that drops", "a window that replaces")):
        assert reason in lane.refused, "the service refuses to sign it before the operator forces it"
    with pytest.raises(LedgerError, match=reason):
        LocalLedger(tmp_path)


def test_the_proofs_file_is_written_before_the_entries_and_a_lost_proof_is_named(tmp_path: Path) -> None:
    lane = Lane(LocalLedger(tmp_path))
    lane.window({A: 1})
    proofs = (tmp_path / PROOFS_FILE).read_text().splitlines()
    assert len(proofs) == 1 and json.loads(proofs[0])["window_id"] == "w0"
    (tmp_path / PROOFS_FILE).write_text("")
    with pytest.raises(LedgerError, match=r"entry 0 .* its transition proof is not in ledger-proofs\.jsonl"):
        LocalLedger(tmp_path)
    assert check_lanes([], []) == {}


async def test_the_service_chains_a_domain_on_the_ledger_and_the_verifier_replays_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Windows closed by the aggregator of a domain lane become v3 entries with their proofs; the ledger
    reopens, and ``receipt-verify ledger --proofs`` replays every transition."""
    from receipt_service.anchors import LocalLedgerBackend
    from receipt_service.metrics import Metrics
    from receipt_service.stores.sqlite import SQLiteStore
    from receipt_service.windows import Aggregator
    from receipt_verifier._cli import main
    from tests.service.test_windows import _batch, _until

    store = SQLiteStore(tmp_path, domain=DOMAIN)
    local = LocalLedgerBackend(tmp_path)
    agg = Aggregator(store, [local], Metrics(), window_seconds=3600, max_leaves=2)
    await agg.start()
    try:
        for batches in ([(3, A), (1, B)], [(1, A)], [(2, B), (1, A)]):
            for n, subject in batches:  # received after the window before closed
                await store.add_batch(_batch(n, subject))
            await agg.close_window()
        ledger = local.ledger
        assert isinstance(ledger, LocalLedger)
        await _until(lambda: (tip := ledger.lane_tip(DOMAIN)) is not None and tip.chain_seq == 2)
    finally:
        assert await agg.drain(5)
        await store.close()
    entries = [e.entry for e in LocalLedger(tmp_path).entries()]
    assert [e.chain_seq for e in entries] == [0, 0, 1, 2, 2]  # trees of 2 leaves: windows of 2, 1 and 2 trees
    key = tmp_path / "ledger.pub"
    key.write_text(ledger.public_key_pem())
    args = [str(tmp_path / "ledger.jsonl"), "--ledger-key", str(key)]
    assert main(["ledger", *args]) == 0
    assert "chained windows of medical-history not replayed: pass --proofs" in capsys.readouterr().out
    assert main(["ledger", *args, "--proofs", str(tmp_path / PROOFS_FILE)]) == 0
    assert "append-only" in capsys.readouterr().out
    lines = (tmp_path / PROOFS_FILE).read_text().splitlines()
    forged = json.loads(lines[1])
    proof = json.loads(forged["proof"])
    proof["changed"][0]["new_size"] = proof["changed"][0]["size"]  # the window "did not grow" A's log
    (tmp_path / "forged.jsonl").write_text(
        "\n".join([lines[0], json.dumps(forged | {"proof": json.dumps(proof)}), lines[2]])
    )
    assert main(["ledger", *args, "--proofs", str(tmp_path / "forged.jsonl")]) != 0  # its hash is not the entry's
    assert "ledger entry 2 (window" in (err := capsys.readouterr().err) and "transition proof is not in" in err
