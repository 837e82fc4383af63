"""Ledger entry signatures and chains."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier import LedgerError, LedgerForkError, UsageError, Verifier
from receipt_verifier.ledger import (
    GENESIS_PREV,
    SignedEntry,
    entry_hash,
    iter_ledger,
    load_public_key,
    load_public_key_file,
    sign_entry,
    verify_chain,
    verify_entry_signature,
)
from receipt_verifier.model import LedgerEntry
from tests.conftest import forked_receipts


def _chain(key: Ed25519PrivateKey, n: int) -> list[SignedEntry]:
    prev, out = GENESIS_PREV, []
    for i in range(n):
        e = LedgerEntry(
            i, prev, "w1", i, 3, f"{i:064x}", "2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z", "2025-01-01T00:00:01Z"
        )
        out.append(SignedEntry(e, sign_entry(key, e)))
        prev = entry_hash(e)
    return out


def test_chain_verifies_and_detects_every_kind_of_break() -> None:
    key = Ed25519PrivateKey.generate()
    chain = _chain(key, 4)
    assert verify_chain(chain, key.public_key()) == entry_hash(chain[-1].entry)
    with pytest.raises(LedgerError, match="a gap, a repeat or a reorder"):
        verify_chain([chain[0], chain[2]], key.public_key())
    forged = dataclasses.replace(chain[2].entry, prev="f" * 64)
    with pytest.raises(LedgerError, match="does not chain"):
        verify_chain([chain[0], chain[1], SignedEntry(forged, sign_entry(key, forged))], key.public_key())
    with pytest.raises(LedgerError, match="signature invalid"):
        verify_chain(chain, Ed25519PrivateKey.generate().public_key())


def test_signature_covers_every_field() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _chain(key, 1)[0]
    for field in ("root", "window_id", "time"):
        changed = dataclasses.replace(signed.entry, **{field: "e" * 64 if field == "root" else "x"})
        with pytest.raises(LedgerError):
            verify_entry_signature(key.public_key(), changed, signed.signature)


def test_public_key_formats() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for form in (pem, raw.encode(), b'{"public_key": "%s"}' % raw.encode()):
        assert load_public_key(form) == key
    with pytest.raises(UsageError, match="cannot read a ledger public key"):
        load_public_key(b"hello")


def test_a_ledger_line_is_compact_sorted_json_and_parses_back() -> None:
    from receipt_verifier.ledger import parse_ledger_line

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signed = _chain(key, 1)[0]
    line = signed.to_json()
    assert line.startswith('{"entry":{"prev":"' + "0" * 64 + '","root":"') and '", "' not in line
    assert line.index('"signature":') > line.index('"entry":') and "\n" not in line
    assert parse_ledger_line(line, 1) == signed


def test_key_and_line_errors_name_what_and_where(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(UsageError) as err:
        load_public_key(ec_pem)
    assert str(err.value) == "the PEM key is not an Ed25519 public key"
    missing = tmp_path / "nope.pem"
    with pytest.raises(UsageError) as err:
        load_public_key_file(missing)
    assert str(err.value) == f"cannot read ledger key file {missing}: No such file or directory"
    good = _chain(Ed25519PrivateKey.generate(), 1)[0].to_json()
    cases = [
        ("{not json", "ledger line 3: not JSON ("),
        ('{"entry": {}, "signature": "00", "x": 1}', "ledger line 3: expected {'entry': …, 'signature': …}"),
        ('{"entry": {}, "signature": 5}', "ledger line 3: expected {'entry': …, 'signature': …}"),
        ('["entry", "signature"]', "ledger line 3: expected {'entry': …, 'signature': …}"),
        ('{"entry": {"v": 7}, "signature": "00"}', "ledger line 3: entry.v: unsupported ledger entry version 7"),
    ]
    for line, message in cases:
        with pytest.raises(LedgerError) as err:
            list(iter_ledger([good, "  ", line]))  # blank lines are skipped but counted
        assert str(err.value).startswith(message), str(err.value)


def test_a_broken_link_names_both_entries() -> None:
    key = Ed25519PrivateKey.generate()
    chain = _chain(key, 3)
    e = dataclasses.replace(chain[2].entry, prev="ab" * 32)
    broken = [*chain[:2], SignedEntry(e, sign_entry(key, e))]
    with pytest.raises(LedgerError) as err:
        verify_chain(broken, key.public_key())
    assert (
        str(err.value) == f"ledger entry 2 does not chain to entry 1: prev {'ab' * 32} != {entry_hash(chain[1].entry)}"
    )


def test_a_key_holder_who_signs_two_entries_for_one_seq_is_caught(tmp_path: Path) -> None:
    """The attacker holds the ledger key and shows two parties two histories (spec section 5.1): each
    receipt is valid on its own; a verifier that sees both reports the fork, whichever it saw first."""
    first, second, pub = forked_receipts(tmp_path, 4, 2)  # two trees each: seq 0 and 1 twice
    v = Verifier([load_public_key_file(pub)])
    statuses = []
    for doc in [first[0], second[0], first[1], first[2], second[3], second[0]]:
        [anchor] = v.verify(json.dumps(doc)).anchors
        statuses.append((anchor.status.value, anchor.reason))
    key = first[0]["branches"][0]["ops"][-1]["anchors"][0]["key_id"]
    forked = [("failed", f"ledger fork: key {key} signed two different entries with seq {s}") for s in (0, 1, 0)]
    assert statuses == [
        ("verified", "signed ledger entry 0"),
        forked[0],
        ("verified", "signed ledger entry 0"),  # the entry seen first stays the one that counts
        ("verified", "signed ledger entry 1"),
        forked[1],
        forked[2],  # checked again, failed again
    ]
    for alone in (first, second):  # either history alone is consistent
        fresh = Verifier([load_public_key_file(pub)])
        assert {fresh.verify(json.dumps(d)).anchors[0].status.value for d in alone} == {"verified"}


def test_a_ledger_copy_makes_a_fork_visible_from_one_receipt(tmp_path: Path) -> None:
    """The auditor keeps a copy of the ledger (spec section 5.1): a receipt whose entry differs from the
    copy's at its seq is a fork even when no other receipt shows the copy's entry; beyond the copy, or
    equal to it, an entry verifies."""
    first, second, pub = forked_receipts(tmp_path, 6, 2)  # three trees each: seq 0..2 twice
    lines = (tmp_path / "a" / "ledger.jsonl").read_bytes().splitlines()
    copy = list(iter_ledger(lines[:2]))  # the copy holds seq 0 and 1 of the first history
    v = Verifier([load_public_key_file(pub)])
    kid = v.pin_ledger(copy)
    got = [
        (a.status.value, a.reason)
        for d in (second[0], second[2], second[4], first[0])
        for a in v.verify(json.dumps(d)).anchors
    ]
    fork = f"ledger fork: key {kid} signed two different entries with seq"
    assert got == [
        ("failed", f"{fork} 0"),
        ("failed", f"{fork} 1"),
        ("verified", "signed ledger entry 2"),  # beyond the copy: the first one seen
        ("verified", "signed ledger entry 0"),
    ]


def test_a_ledger_copy_must_verify_under_a_pinned_key(tmp_path: Path) -> None:
    _, _, pub = forked_receipts(tmp_path, 4, 2)
    lines = (tmp_path / "a" / "ledger.jsonl").read_bytes().splitlines()
    with pytest.raises(LedgerError, match="not signed by any pinned ledger key"):
        Verifier([Ed25519PrivateKey.generate().public_key()]).pin_ledger(list(iter_ledger(lines)))
    with pytest.raises(LedgerError, match="found where entry 0 was expected"):
        Verifier([load_public_key_file(pub)]).pin_ledger(list(iter_ledger(lines[1:])))
    with pytest.raises(LedgerError, match="holds no entry"):
        Verifier([load_public_key_file(pub)]).pin_ledger([])
    v = Verifier([load_public_key_file(pub)])
    v.pin_ledger(iter_ledger(lines))
    other = (tmp_path / "b" / "ledger.jsonl").read_bytes().splitlines()
    with pytest.raises(
        LedgerForkError, match=r"ledger fork: .* with seq 0 \(this ledger and an entry seen before it\)"
    ):
        v.pin_ledger(iter_ledger(other))  # two copies that disagree: the key holder forked


def test_a_copy_that_contradicts_a_receipt_seen_before_is_refused_whole(tmp_path: Path) -> None:
    first, second, pub = forked_receipts(tmp_path, 12, 2)  # seq 0..5 twice
    v = Verifier([load_public_key_file(pub)])
    assert v.verify(json.dumps(second[6])).anchors[0].status.value == "verified"  # seq 3 of the second history
    with pytest.raises(LedgerForkError, match="with seq 3 \\(this ledger and an entry seen before it\\)"):
        v.pin_ledger(iter_ledger((tmp_path / "a" / "ledger.jsonl").read_bytes().splitlines()))
    # nothing of the refused copy was taken: the second history's other entries still verify
    assert {v.verify(json.dumps(d)).anchors[0].status.value for d in second} == {"verified"}
    assert {v.verify(json.dumps(d)).anchors[0].status.value for d in first} == {"failed"}
