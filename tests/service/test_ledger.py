"""The local ledger file: durable, chained, idempotent, crash-tolerant."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from receipt_service.errors import ConflictError
from receipt_service.ledger import (
    KEY_FILE,
    LOCK_FILE,
    LocalLedger,
    TreeRoot,
    ledger_entry,
    load_or_create_key,
    to_anchor,
)
from receipt_verifier import LedgerError
from receipt_verifier.ledger import (
    GENESIS_PREV,
    entry_hash,
    key_id,
    load_public_key,
    parse_ledger_line,
    raw_public_key,
    verify_chain,
    verify_entry_signature,
)
from receipt_verifier.model import LedgerEntry, LocalAnchor


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


def test_a_key_file_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / KEY_FILE).write_bytes(pem)
    with pytest.raises(LedgerError) as err:
        LocalLedger(tmp_path)
    assert str(err.value) == f"{tmp_path / KEY_FILE} does not hold an Ed25519 private key"


def test_a_named_key_is_created_once_private_and_without_leftovers(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path, "event-key.pem")
    assert (tmp_path / "event-key.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["event-key.pem"]
    again = load_or_create_key(tmp_path, "event-key.pem")
    assert raw_public_key(again.public_key()) == raw_public_key(key.public_key())


def test_processes_creating_a_key_at_once_agree_on_one(tmp_path: Path) -> None:
    """Workers starting together: one key is made and every one of them loads it, never two keys."""
    code = (
        "import sys; from pathlib import Path; from receipt_service.ledger import load_or_create_key;from receipt_verifier.ledger import raw_public_key;"
        "print(raw_public_key(load_or_create_key(Path(sys.argv[1]), 'event-key.pem').public_key()).hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["event-key.pem"]


def test_entries_chain_and_every_line_is_the_signed_entry(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    assert ledger.path.exists() and ledger.path.read_bytes() == b"" and len(ledger) == 0
    first = ledger.append(_root(0), "2025-01-01T00:00:01Z")
    second = ledger.append(_root(1), "2025-01-01T00:00:02Z")
    assert (first.entry.seq, first.entry.prev) == (0, GENESIS_PREV)
    assert (second.entry.seq, second.entry.prev) == (1, entry_hash(first.entry))
    assert ledger.path.read_bytes() == (first.to_json() + "\n" + second.to_json() + "\n").encode()
    assert ledger.find("w1", 1) == second and ledger.find("w1", 2) is None and ledger.find("w2", 0) is None
    copy = ledger.entries()
    copy.clear()
    assert ledger.entries() == [first, second]
    verify_entry_signature(ledger.public_key, second.entry, second.signature)
    pem = ledger.public_key_pem()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert raw_public_key(load_public_key(pem.encode())) == raw_public_key(ledger.public_key)
    assert to_anchor(ledger.key_id, second) == LocalAnchor(
        f"{ledger.key_id}:1", ledger.key_id, second.entry, second.signature
    )


def test_a_reopened_ledger_stays_idempotent_and_keeps_its_head(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    first = ledger.append(_root(0), "2025-01-01T00:00:01Z")
    with open(ledger.path, "ab") as f:
        f.write(b"\n")  # a blank line is no entry
    again = LocalLedger(tmp_path)
    assert again.find("w1", 0) == first
    assert again.append(_root(0), "2025-01-01T00:00:05Z") == first and len(again) == 1
    assert again.append(_root(1), "2025-01-01T00:00:05Z").entry.prev == entry_hash(first.entry)


def test_a_torn_line_is_cut_from_the_file_itself(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    good = ledger.path.read_bytes()
    with open(ledger.path, "ab") as f:
        f.write(b'{"entry": {"v": 1')
    LocalLedger(tmp_path)
    assert ledger.path.read_bytes() == good


def test_a_conflicting_root_or_size_names_both_roots(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    with pytest.raises(ConflictError) as err:
        ledger.append(_root(0, "ab" * 32), "2025-01-01T00:00:09Z")
    assert str(err.value) == (
        f"window w1 tree 0 is already anchored with root {1:064x}; refusing a different root {'ab' * 32}"
    )
    resized = TreeRoot("w1", 0, 5, f"{1:064x}", "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z")
    with pytest.raises(ConflictError, match="already anchored"):
        ledger.append(resized, "2025-01-01T00:00:09Z")


def test_ledger_entries_carry_heads_only_for_a_domain_window() -> None:
    v1 = ledger_entry(TreeRoot("w", 2, 3, "11" * 32, "s", "e", domain="insurance"), 7, "22" * 32, "t")
    assert v1 == LedgerEntry(7, "22" * 32, "w", 2, 3, "11" * 32, "s", "e", "t", None, None, None)
    v2 = ledger_entry(TreeRoot("w", 2, 3, "11" * 32, "s", "e", "insurance", "33" * 32, 4), 7, "22" * 32, "t")
    assert v2 == LedgerEntry(7, "22" * 32, "w", 2, 3, "11" * 32, "s", "e", "t", "insurance", "33" * 32, 4)


def test_a_nested_data_dir_is_created_and_a_bad_line_is_named_by_number(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    ledger = LocalLedger(nested)
    assert ledger.key_id == key_id(ledger.public_key)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    with open(ledger.path, "ab") as f:
        f.write(b'{"entry": 1, "signature": "00"}\n')
    with pytest.raises(LedgerError, match=r"^ledger line 2: "):
        LocalLedger(nested)


def test_two_processes_ledgers_append_in_turn_on_one_chain(tmp_path: Path) -> None:
    """Workers of one data directory: whoever leads appends after the other's entries, never beside them."""
    a, b = LocalLedger(tmp_path), LocalLedger(tmp_path)
    a.append(_root(0), "2025-01-01T00:00:01Z")
    assert b.append(_root(1), "2025-01-01T00:00:02Z").entry.seq == 1  # b reloads a's entry first
    assert b.append(_root(0), "2025-01-01T00:00:09Z") == a.find("w1", 0)  # a's tree is not anchored again
    assert a.append(_root(2), "2025-01-01T00:00:03Z").entry.seq == 2
    entries = [parse_ledger_line(line, n) for n, line in enumerate(a.path.read_bytes().splitlines(), 1)]
    assert verify_chain(entries, a.public_key) == entry_hash(entries[-1].entry)
    assert [e.entry.tree_index for e in entries] == [0, 1, 2]
    assert [e.entry.tree_index for e in b.entries()] == [0, 1, 2]


def test_a_lazy_ledger_reads_and_checks_the_file_at_first_use(tmp_path: Path) -> None:
    """A worker that never leads never reads the ledger; one that leads checks it before appending."""
    ledger = LocalLedger(tmp_path)
    ledger.append(_root(0), "2025-01-01T00:00:01Z")
    ledger.path.write_text(ledger.path.read_text().replace(f"{1:064x}", "ab" * 32))
    worker = LocalLedger(tmp_path, lazy=True)
    assert worker.key_id == ledger.key_id
    with pytest.raises(LedgerError, match="signature invalid"):
        worker.append(_root(1), "2025-01-01T00:00:02Z")


def test_a_line_being_written_by_another_process_is_not_taken_for_a_torn_one(tmp_path: Path) -> None:
    """Opening waits for the writer's lock: a line half written is finished, never truncated."""
    src = LocalLedger(tmp_path / "src")
    src.append(_root(0), "2025-01-01T00:00:01Z")
    src.append(_root(1), "2025-01-01T00:00:02Z")
    first, second = src.path.read_bytes().splitlines(keepends=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    shutil.copy(tmp_path / "src" / KEY_FILE, dst / KEY_FILE)
    (dst / "ledger.jsonl").write_bytes(first + second[:40])
    opened: list[LocalLedger] = []
    with open(dst / LOCK_FILE, "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the writer, mid-append
        opener = threading.Thread(target=lambda: opened.append(LocalLedger(dst)))
        opener.start()
        opener.join(0.3)
        assert opener.is_alive() and not opened, "the ledger opened while another process was writing"
        with open(dst / "ledger.jsonl", "ab") as f:
            f.write(second[40:])
    opener.join(10)
    assert len(opened[0]) == 2
