"""The local ledger file: durable, chained, idempotent, crash-tolerant."""

from __future__ import annotations

from pathlib import Path

import pytest

from receipt_service.errors import ConflictError
from receipt_service.ledger import KEY_FILE, LocalLedger, TreeRoot
from receipt_verifier import LedgerError


def _root(i: int, root: str | None = None) -> TreeRoot:
    return TreeRoot("w1", i, 4, root or f"{i + 1:064x}", "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z")


def test_reopen_keeps_key_and_chain(tmp_path: Path) -> None:
    a = LocalLedger(tmp_path)
    for i in range(3):
        a.append(_root(i), "2025-01-01T00:00:01Z")
    b = LocalLedger(tmp_path)
    assert b.key_id == a.key_id and len(b) == 3
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert b.append(_root(3), "2025-01-01T00:00:02Z").entry.seq == 3


def test_append_is_idempotent_and_refuses_conflicts(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    first = ledger.append(_root(0), "2025-01-01T00:00:01Z")
    assert ledger.append(_root(0), "2025-01-01T00:00:09Z") == first
    assert len(ledger) == 1
    with pytest.raises(ConflictError, match="already anchored"):
        ledger.append(_root(0, "ab" * 32), "2025-01-01T00:00:09Z")


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    with open(ledger.path, "ab") as f:
        f.write(b'{"entry": {"v": 1, "seq": 1')  # crash mid-write
    again = LocalLedger(tmp_path)
    assert len(again) == 1
    assert again.append(_root(1), "2025-01-01T00:00:02Z").entry.seq == 1


def test_tampered_ledger_refuses_to_open(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    ledger.path.write_text(ledger.path.read_text().replace(f"{1:064x}", "ab" * 32))
    with pytest.raises(LedgerError, match="signature invalid"):
        LocalLedger(tmp_path)
