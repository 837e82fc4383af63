"""The local signed ledger: append-only JSON-lines file of Ed25519-signed, hash-chained entries.

Each append is written and fsynced before it returns. On open the whole file is checked
against the ledger's own key; a torn last line (a crash mid-write, never acknowledged) is
cut off. Appending the same (window, tree) again returns the existing entry, so retries
after a crash are idempotent.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier.errors import LedgerError
from receipt_verifier.ledger import (
    GENESIS_PREV,
    SignedEntry,
    entry_hash,
    key_id,
    parse_ledger_line,
    sign_entry,
    verify_chain,
)
from receipt_verifier.model import LedgerEntry, LocalAnchor

from .errors import ConflictError

KEY_FILE = "ledger-key.pem"
LEDGER_FILE = "ledger.jsonl"


def load_or_create_key(data_dir: Path, name: str = KEY_FILE) -> Ed25519PrivateKey:
    """A signing key of the data directory (the ledger's by default), generated on first start (mode 0600)."""
    path = data_dir / name
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(data_dir)
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TreeRoot:
    """What gets anchored: one window tree's root and where it came from."""

    window_id: str
    tree_index: int
    tree_size: int
    root: str
    window_start: str
    window_end: str
    # a domain lane's window also commits to the heads of its subject logs (spec section 14)
    domain: str | None = None
    heads_root: str | None = None
    heads_size: int | None = None


def ledger_entry(root: TreeRoot, seq: int, prev: str, now: str) -> LedgerEntry:
    """The ledger entry anchoring ``root`` at position ``seq`` after the entry hashing to ``prev``."""
    return LedgerEntry(
        seq=seq,
        prev=prev,
        window_id=root.window_id,
        tree_index=root.tree_index,
        tree_size=root.tree_size,
        root=root.root,
        window_start=root.window_start,
        window_end=root.window_end,
        time=now,
        domain=root.domain if root.heads_root is not None else None,
        heads_root=root.heads_root,
        heads_size=root.heads_size,
    )


def same_tree(existing: SignedEntry, root: TreeRoot) -> SignedEntry:
    """The entry already anchoring this tree, if it is for the same root (``ConflictError`` if not)."""
    if existing.entry.root != root.root or existing.entry.tree_size != root.tree_size:
        raise ConflictError(
            f"window {root.window_id} tree {root.tree_index} is already anchored with root"
            f" {existing.entry.root}; refusing a different root {root.root}"
        )
    return existing


def to_anchor(key_id_hex: str, signed: SignedEntry) -> LocalAnchor:
    """The receipt anchor for a ledger entry."""
    return LocalAnchor(
        anchor_id=f"{key_id_hex}:{signed.entry.seq}", key_id=key_id_hex, entry=signed.entry, signature=signed.signature
    )


class LocalLedger:
    """The embedded anchor: thread-safe appends to one ledger file."""

    def __init__(self, data_dir: Path, private_key: Ed25519PrivateKey | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LEDGER_FILE
        self._key = private_key or load_or_create_key(data_dir)
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)
        self._lock = threading.Lock()
        self._entries: list[SignedEntry] = []
        self._by_tree: dict[tuple[str, int], SignedEntry] = {}
        self._head = GENESIS_PREV
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):  # torn final line from a crash: it was never acknowledged
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
            data = data[:good_end]
        entries = [parse_ledger_line(line, n) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
        self._head = verify_chain(entries, self.public_key)
        self._entries = entries
        self._by_tree = {(e.entry.window_id, e.entry.tree_index): e for e in entries}

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[SignedEntry]:
        """A copy of every entry, oldest first."""
        with self._lock:
            return list(self._entries)

    def find(self, window_id: str, tree_index: int) -> SignedEntry | None:
        """The entry for a tree, if it was anchored."""
        return self._by_tree.get((window_id, tree_index))

    def append(self, root: TreeRoot, now: str) -> SignedEntry:
        """Anchor a tree root; idempotent for the same root, ``ConflictError`` for a different one."""
        with self._lock:
            existing = self._by_tree.get((root.window_id, root.tree_index))
            if existing is not None:
                return same_tree(existing, root)
            entry = ledger_entry(root, len(self._entries), self._head, now)
            signed = SignedEntry(entry, sign_entry(self._key, entry))
            with open(self.path, "ab") as f:
                f.write(signed.to_json().encode("ascii") + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self._entries.append(signed)
            self._by_tree[(root.window_id, root.tree_index)] = signed
            self._head = entry_hash(entry)
            return signed

    def public_key_pem(self) -> str:
        """The public key auditors pin."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
