"""The local signed ledger: append-only JSON-lines file of Ed25519-signed, hash-chained entries.

Each append is written and fsynced before it returns. On open the whole file is checked
against the ledger's own key; a torn last line (a crash mid-write, never acknowledged) is
cut off. Appending the same (window, tree) again returns the existing entry, so retries
after a crash are idempotent.

A domain's windows are chained (spec section 14.7, ledger entries v3): each window's entries carry
its place in the domain's chain and the hash of its transition proof, which is kept beside the
ledger (``ledger-proofs.jsonl``, written before the entries). On open every domain's chain is
replayed: a window that skips a place, leaves a gap in time, lacks its proof, does not grow the
heads it follows, or an unchained entry after a chained one, stops the service with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier.errors import LedgerError
from receipt_verifier.ledger import (
    GENESIS_PREV,
    LaneTip,
    SignedEntry,
    check_ledger_chains,
    entry_hash,
    key_id,
    next_window,
    parse_ledger_line,
    sign_entry,
    verify_chain,
)
from receipt_verifier.model import LedgerEntry, LocalAnchor

from .errors import ConflictError
from .stores.base import TreeRecord

KEY_FILE = "ledger-key.pem"
LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = "ledger.lock"  # held (flock) by whichever process reads or appends the files
PROOFS_FILE = "ledger-proofs.jsonl"  # the transition proofs of chained windows, one JSON line each


def load_or_create_key(data_dir: Path, name: str = KEY_FILE) -> Ed25519PrivateKey:
    """A signing key of the data directory (the ledger's by default), generated on first start (mode 0600).

    Several processes starting at once agree on one key: the first to link its file in place wins and
    the others load that one."""
    path = data_dir / name
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
                os.link(tmp, path)
        finally:
            tmp.unlink()
        _fsync_dir(data_dir)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise LedgerError(f"{path} does not hold an Ed25519 private key")
    return loaded


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
    # a chained window (ledger entry v3): its place in the domain's chain and its proof's hash
    chain_seq: int | None = None
    proof_hash: str | None = None


@dataclass(frozen=True)
class WindowProof:
    """A chained window's transition proof as kept beside the ledger."""

    domain: str
    chain_seq: int
    window_id: str
    proof: str  # JSON text, exactly the bytes ``proof_hash`` is taken over

    def to_json(self) -> str:
        """One line of the proofs file."""
        return json.dumps(
            {"domain": self.domain, "chain_seq": self.chain_seq, "window_id": self.window_id, "proof": self.proof},
            separators=(",", ":"),
        )

    @property
    def hash(self) -> str:
        """SHA-256 of the proof text: the entries' ``proof_hash``."""
        return hashlib.sha256(self.proof.encode("utf-8")).hexdigest()


def parse_proof_line(line: str | bytes, n: int) -> WindowProof:
    """A line of the proofs file."""
    try:
        doc = json.loads(line)
        return WindowProof(str(doc["domain"]), int(doc["chain_seq"]), str(doc["window_id"]), str(doc["proof"]))
    except (ValueError, KeyError, TypeError):
        raise LedgerError(f"{PROOFS_FILE} line {n} is not a window's transition proof") from None


def check_place(proof: WindowProof, want: int) -> None:
    """The window must take the place the ledger has next (``ConflictError`` names both)."""
    if proof.chain_seq != want:
        raise ConflictError(
            f"window {proof.window_id} claims place {proof.chain_seq} in the chain of {proof.domain};"
            f" the ledger's next is {want}"
        )


def check_before_signing(tip: LaneTip | None, roots: Sequence[TreeRoot], proof: WindowProof) -> LaneTip:
    """Refuse to sign a window its domain's chain would not accept (the replay at the next open would);
    the domain's tip once it is appended."""
    check_place(proof, 0 if tip is None else tip.chain_seq + 1)
    entry = ledger_entry(replace(roots[0], chain_seq=proof.chain_seq, proof_hash=proof.hash), 0, GENESIS_PREV, "")
    return next_window(tip, entry, proof.proof, f"window {proof.window_id} of {proof.domain}")


def check_lanes(entries: Iterable[SignedEntry], proofs: Iterable[WindowProof]) -> dict[str, LaneTip]:
    """Every domain's chain of windows on a ledger, replayed with the proofs kept beside it."""
    return check_ledger_chains(entries, {p.hash: p.proof for p in proofs})


def tree_root(domain: str | None, tree: TreeRecord) -> TreeRoot:
    """What anchors a stored tree (a domain lane's tree also commits to its window's heads)."""
    return TreeRoot(
        tree.window_id,
        tree.tree_index,
        tree.size,
        tree.root.hex(),
        tree.window_start,
        tree.window_end,
        domain if tree.heads_root is not None else None,
        None if tree.heads_root is None else tree.heads_root.hex(),
        tree.heads_size,
    )


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
        chain_seq=root.chain_seq,
        proof_hash=root.proof_hash,
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


def _cut_torn_line(path: Path) -> bytes:
    """The file's bytes without a torn final line (a crash mid-append: never acknowledged), cut from the file."""
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
        data = data[:good_end]
    return data


class LocalLedger:
    """The embedded anchor: appends to one ledger file, safe across threads and across the worker
    processes of one data directory (``serve --workers``).

    Every read and append holds an exclusive ``flock`` on ``ledger.lock``; a process that finds the
    files grown since it last looked (another worker led meanwhile) reloads and re-checks them first.
    """

    def __init__(self, data_dir: Path, private_key: Ed25519PrivateKey | None = None, *, lazy: bool = False) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LEDGER_FILE
        self.proofs_path = data_dir / PROOFS_FILE
        self.tips: dict[str, LaneTip] = {}  # each domain's newest chained window
        self._key = private_key or load_or_create_key(data_dir)
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)
        self._lock = threading.Lock()
        self._lock_path = data_dir / LOCK_FILE
        self._entries: list[SignedEntry] = []
        self._by_tree: dict[tuple[str, int], SignedEntry] = {}
        self._head = GENESIS_PREV
        self._seen: tuple[int, int] = (-1, -1)  # (ledger, proofs) sizes as last read or written
        if not lazy:  # read and check the files now (lazy: at first use; a worker that never leads never reads them)
            with self._exclusive():  # loads the files: nothing has been seen yet
                pass

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone in this process, this process alone on the files; reloaded if they grew."""
        with self._lock, open(self._lock_path, "ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
            if self._sizes() != self._seen:
                self._load()
            yield

    def _sizes(self) -> tuple[int, int]:
        sizes = []
        for path in (self.path, self.proofs_path):
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def _load(self) -> None:
        if not self.path.exists():
            self.path.touch()
            self._seen = self._sizes()
            return
        data = _cut_torn_line(self.path)
        if self.proofs_path.exists():  # a proof torn by a crash: the next one must start on its own line
            _cut_torn_line(self.proofs_path)
        entries = [parse_ledger_line(line, n) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
        self._head = verify_chain(entries, self.public_key)
        self.tips = check_lanes(entries, self.proofs())
        self._entries = entries
        self._by_tree = {(e.entry.window_id, e.entry.tree_index): e for e in entries}
        self._seen = self._sizes()

    def proofs(self) -> list[WindowProof]:
        """The transition proofs kept beside the ledger (a torn last line, never used by an entry, is skipped)."""
        if not self.proofs_path.exists():
            return []
        lines = self.proofs_path.read_bytes().split(b"\n")
        return [parse_proof_line(line, n) for n, line in enumerate(lines[:-1], 1) if line.strip()]

    def __len__(self) -> int:
        with self._exclusive():
            return len(self._entries)

    def entries(self) -> list[SignedEntry]:
        """A copy of every entry, oldest first."""
        with self._exclusive():
            return list(self._entries)

    def lane_tip(self, domain: str) -> LaneTip | None:
        """The domain's newest chained window on the ledger."""
        with self._exclusive():
            return self.tips.get(domain)

    def find(self, window_id: str, tree_index: int) -> SignedEntry | None:
        """The entry for a tree, if it was anchored."""
        with self._exclusive():
            return self._by_tree.get((window_id, tree_index))

    def append(self, root: TreeRoot, now: str) -> SignedEntry:
        """Anchor a tree root; idempotent for the same root, ``ConflictError`` for a different one."""
        with self._exclusive():
            existing = self._by_tree.get((root.window_id, root.tree_index))
            if existing is not None:
                return same_tree(existing, root)
            if root.heads_root is not None and root.domain in self.tips:
                raise ConflictError(f"the ledger chains {root.domain}'s windows: an unchained entry would break it")
            entry = ledger_entry(root, len(self._entries), self._head, now)
            signed = SignedEntry(entry, sign_entry(self._key, entry))
            with open(self.path, "ab") as f:
                f.write(signed.to_json().encode("ascii") + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self._entries.append(signed)
            self._by_tree[(root.window_id, root.tree_index)] = signed
            self._head = entry_hash(entry)
            self._seen = self._sizes()
            return signed

    def append_window(self, roots: Sequence[TreeRoot], proof: WindowProof, now: str) -> list[SignedEntry]:
        """Anchor a chained window's trees after its domain's tip, its proof first; idempotent per tree."""
        with self._exclusive():
            done = [self._by_tree.get((r.window_id, r.tree_index)) for r in roots]
            if all(d is not None for d in done):
                return [d for d in done if d is not None]
            first = done[0]
            new_tip = None
            if first is not None:  # the rest of a window cut short by a crash: its place stands
                check_place(proof, first.entry.chain_seq or 0)
            else:
                new_tip = check_before_signing(self.tips.get(proof.domain), roots, proof)
                with open(self.proofs_path, "ab") as f:
                    f.write(proof.to_json().encode("utf-8") + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
            out: list[SignedEntry] = []
            new: list[SignedEntry] = []
            seq, head = len(self._entries), self._head
            for root, existing in zip(roots, done, strict=True):
                if existing is not None:
                    out.append(existing)
                    continue
                entry = ledger_entry(replace(root, chain_seq=proof.chain_seq, proof_hash=proof.hash), seq, head, now)
                signed = SignedEntry(entry, sign_entry(self._key, entry))
                seq, head = seq + 1, entry_hash(entry)
                new.append(signed)
                out.append(signed)
            with open(self.path, "ab") as f:  # all of the window's entries, then one fsync
                f.write(b"".join(s.to_json().encode("ascii") + b"\n" for s in new))
                f.flush()
                os.fsync(f.fileno())
            for signed in new:  # on disk: now the state
                self._entries.append(signed)
                self._by_tree[(signed.entry.window_id, signed.entry.tree_index)] = signed
            self._head = head
            if new_tip is not None:
                self.tips[proof.domain] = new_tip
            self._seen = self._sizes()
            return out

    def public_key_pem(self) -> str:
        """The public key auditors pin."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
