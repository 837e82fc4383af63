"""A lane of chained windows written by hand, as the service or an attacker holding its keys would."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from receipt_service.transition import build_transition, changed_entry, transition_nodes
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import IndexedHeads, subject_key
from receipt_verifier.logs import log_root
from receipt_verifier.merkle import consistency_proof

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def now(offset: float = 0.0) -> str:
    """The current time (plus ``offset`` seconds) in the form windows carry."""
    return (datetime.now(UTC) + timedelta(seconds=offset)).strftime(STAMP)


def records(n: int) -> list[bytes]:
    """``n`` fresh log entries (leaf values)."""
    return [os.urandom(32) for _ in range(n)]


def heads_of(logs: Mapping[str, list[bytes]]) -> IndexedHeads:
    """The indexed heads tree of logs given in insertion order."""
    return IndexedHeads([(subject_key(s), len(entries), log_root(entries)) for s, entries in logs.items()])


def forge_transition(old: IndexedHeads, new: IndexedHeads) -> dict[str, Any]:
    """A transition proof listing every changed leaf as it is, grown or not (no consistency hashes)."""
    changed = [i for i in range(old.size) if old.value(i) != new.value(i)]
    entries = [changed_entry(old, new, i, []) for i in changed]
    assert new.size == old.size, "forged proofs here rewrite logs, they add no subject"
    return {
        "old_size": old.size,
        "new_size": new.size,
        "changed": entries,
        "inserted": [],
        "nodes": transition_nodes(old, changed),
    }


@dataclass
class ChainLane:
    """One lane's chain on one channel: its committed logs and tip, and the windows that may follow."""

    name: str = field(default_factory=lambda: f"test-{os.urandom(4).hex()}")
    logs: dict[str, list[bytes]] = field(default_factory=dict)
    tip: bytes | None = None
    window_no: int = 0

    @property
    def seq(self) -> int:
        """The next window's sequence number."""
        return 0 if self.tip is None else int(json.loads(self.tip)["seq"]) + 1

    @property
    def prev(self) -> str:
        """The next window's ``prev``."""
        return "0" * 64 if self.tip is None else hashlib.sha256(self.tip).hexdigest()

    @property
    def end(self) -> str | None:
        """The tip's window end (the next window's start)."""
        return None if self.tip is None else str(json.loads(self.tip)["window_end"])

    def grown(
        self, grow: Mapping[str, list[bytes]], logs: Mapping[str, list[bytes]] | None = None
    ) -> dict[str, list[bytes]]:
        """The logs (the lane's, or ``logs``) with ``grow``'s entries appended (new subjects at the end, by key)."""
        out = {s: list(entries) for s, entries in (self.logs if logs is None else logs).items()}
        for s in sorted((s for s in grow if s not in out), key=subject_key):
            out[s] = []
        for s, extra in grow.items():
            out[s] = out[s] + extra
        return out

    def args(
        self,
        new_logs: Mapping[str, list[bytes]],
        *,
        trees: int = 1,
        edit: Any = None,
        **override: Any,
    ) -> list[str]:
        """``AppendWindow``'s arguments for a window whose heads are ``new_logs``; ``override`` replaces
        seq, prev, start, end, heads_root or heads_size; ``edit(proof)`` tampers with the proof."""
        old, new = heads_of(self.logs), heads_of(new_logs)
        consistency = {}
        for s, entries in new_logs.items():
            before = self.logs.get(s, [])
            if before and entries != before and len(entries) > len(before):
                consistency[subject_key(s)] = consistency_proof([leaf_hash(e) for e in entries], len(before))
        try:
            proof = build_transition(old, new, consistency)
        except ValueError:  # the honest builder proves no rewrite: forge one as an attacker would
            proof = forge_transition(old, new)
        if edit is not None:
            edit(proof)
        self.window_no += 1
        window_id = f"{self.name}-w{self.window_no}-{os.urandom(2).hex()}"
        tree_list = [{"index": i, "root": os.urandom(32).hex(), "size": 4} for i in range(trees)]
        values = {
            "seq": str(self.seq),
            "prev": self.prev,
            "start": self.end or now(-2),
            "end": now(),
            "heads_root": new.root.hex(),
            "heads_size": str(new.size),
        } | {k: str(v) for k, v in override.items()}
        return [
            self.name,
            values["seq"],
            values["prev"],
            window_id,
            values["start"],
            values["end"],
            json.dumps(tree_list),
            values["heads_root"],
            values["heads_size"],
            json.dumps(proof),
        ]

    def batch(self, windows: list[dict[str, list[bytes]]]) -> list[str]:
        """``AppendWindows``' arguments for consecutive windows whose heads are the logs given, in order."""
        args = [self.name]
        logs, tip = self.logs, self.tip
        for i, new_logs in enumerate(windows):
            one = self.args(new_logs)
            if i > 0:
                one[2] = ""  # the chaincode links it to the record before it
            args += one[1:]
            self.tip = json.dumps({"seq": int(one[1]), "window_end": one[5]}).encode()  # what the next needs
            self.logs = new_logs
        self.logs, self.tip = logs, tip
        return args

    def accept(self, result: bytes, new_logs: Mapping[str, list[bytes]]) -> None:
        """The window committed: ``result`` is the new tip."""
        self.tip = result
        self.logs = {s: list(entries) for s, entries in new_logs.items()}
