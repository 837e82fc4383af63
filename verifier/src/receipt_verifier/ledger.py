"""The local signed ledger: an append-only, hash-chained list of window roots (Ed25519).

Entry hash = SHA-256(canonical JSON of the entry); each entry's ``prev`` is the previous
entry's hash (64 zeros for ``seq`` 0). The signature covers ``SIGNING_PREFIX`` followed by
the canonical JSON, so a ledger signature can never be confused with another protocol's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from . import strict_json
from .errors import LedgerError, LedgerForkError, MalformedReceiptError, UsageError
from .heads import HeadsError, check_transition, empty_heads
from .model import LedgerEntry

SIGNING_PREFIX = b"health-receipt/local-ledger/v1\n"
GENESIS_PREV = "0" * 64


def entry_hash(entry: LedgerEntry) -> str:
    """Hex SHA-256 of the entry's canonical bytes."""
    return hashlib.sha256(entry.canonical_bytes()).hexdigest()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw public-key bytes."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256(raw public key), as 16 hex characters."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def sign_entry(private_key: Ed25519PrivateKey, entry: LedgerEntry) -> str:
    """Hex Ed25519 signature of an entry."""
    return private_key.sign(SIGNING_PREFIX + entry.canonical_bytes()).hex()


def verify_entry_signature(
    public_key: Ed25519PublicKey, entry: LedgerEntry, signature_hex: str, canonical: bytes | None = None
) -> None:
    """Raise ``LedgerError`` unless ``signature_hex`` signs ``entry`` (its ``canonical`` bytes, when the
    caller has them) under ``public_key``. libsodium checks it, in half OpenSSL's time here."""
    try:
        _nacl_key(public_key).verify(
            SIGNING_PREFIX + (canonical or entry.canonical_bytes()), bytes.fromhex(signature_hex)
        )
    except (BadSignatureError, ValueError):
        raise LedgerError(
            f"ledger entry {entry.seq} is not signed by key {key_id(public_key)}: signature invalid"
        ) from None


_NACL_KEYS: dict[int, tuple[Ed25519PublicKey, VerifyKey]] = {}


def _nacl_key(public_key: Ed25519PublicKey) -> VerifyKey:
    """libsodium's form of a pinned key, kept by the key object (held, so its id is not reused)."""
    hit = _NACL_KEYS.get(id(public_key))
    if hit is None or hit[0] is not public_key:
        if len(_NACL_KEYS) >= 1024:
            _NACL_KEYS.clear()
        hit = _NACL_KEYS[id(public_key)] = (public_key, VerifyKey(raw_public_key(public_key)))
    return hit[1]


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Read a ledger public key: PEM, 64 hex characters, or the JSON served at ``/ledger/key``."""
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
            if not isinstance(key, Ed25519PublicKey):
                raise UsageError("the PEM key is not an Ed25519 public key")
            return key
        if text.startswith(b"{"):
            doc = strict_json.loads(text)
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["public_key"]))
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read a ledger public key ({exc}); expected PEM, 64 hex characters, or /ledger/key JSON"
        ) from None


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    """Read a ledger public key from a file."""
    try:
        return load_public_key(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read ledger key file {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class SignedEntry:
    """One line of a ledger file."""

    entry: LedgerEntry
    signature: str

    def to_json(self) -> str:
        """The ledger-file line (no newline)."""
        return json.dumps(
            {"entry": self.entry.to_dict(), "signature": self.signature}, sort_keys=True, separators=(",", ":")
        )


def parse_ledger_line(line: str | bytes, lineno: int) -> SignedEntry:
    """Parse one JSON line of a ledger file."""
    from .codec import parse_entry

    try:
        doc = strict_json.loads(line)
    except ValueError as exc:
        raise LedgerError(f"ledger line {lineno}: not JSON ({exc})") from None
    if type(doc) is not dict or set(doc) != {"entry", "signature"} or type(doc["signature"]) is not str:
        raise LedgerError(f"ledger line {lineno}: expected {{'entry': …, 'signature': …}}")
    try:
        entry = parse_entry(doc["entry"], f"ledger line {lineno}: entry")
    except MalformedReceiptError as exc:
        raise LedgerError(str(exc)) from None
    return SignedEntry(entry, doc["signature"])


def iter_ledger(lines: Iterable[str | bytes]) -> Iterator[SignedEntry]:
    """Parse the non-empty lines of a ledger file."""
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            yield parse_ledger_line(line, lineno)


def iter_chain(entries: Iterable[SignedEntry], public_key: Ed25519PublicKey) -> Iterator[tuple[SignedEntry, bytes]]:
    """Each entry of a whole ledger with its SHA-256, once its seq, its link and its signature are checked."""
    prev = GENESIS_PREV
    for expected_seq, signed in enumerate(entries):
        e = signed.entry
        if e.seq != expected_seq:
            raise LedgerError(
                f"ledger entry {e.seq} found where entry {expected_seq} was expected (a gap, a repeat or a reorder)"
            )
        if e.prev != prev:
            raise LedgerError(f"ledger entry {e.seq} does not chain to entry {e.seq - 1}: prev {e.prev} != {prev}")
        verify_entry_signature(public_key, e, signed.signature)
        digest = e.digest()
        yield signed, digest
        prev = digest.hex()


def verify_chain(entries: Iterable[SignedEntry], public_key: Ed25519PublicKey) -> str:
    """Check every signature and link of a whole ledger; return the head entry hash."""
    head = GENESIS_PREV
    for _, digest in iter_chain(entries, public_key):
        head = digest.hex()
    return head


def chain_signer(first: SignedEntry, keys: Iterable[Ed25519PublicKey]) -> Ed25519PublicKey:
    """The one of ``keys`` that signed a ledger's first entry (its chain is checked under it), or ``LedgerError``."""
    for key in keys:
        try:
            verify_entry_signature(key, first.entry, first.signature)
        except LedgerError:
            continue
        return key
    raise LedgerError("the ledger is not signed by any pinned ledger key (its entry 0 verifies under none)")


def verify_chain_of(entries: Sequence[SignedEntry], keys: Iterable[Ed25519PublicKey]) -> Ed25519PublicKey:
    """``verify_chain`` under whichever of ``keys`` signed the first entry; that key, or ``LedgerError``."""
    if not entries:
        raise LedgerError("the ledger holds no entry")
    key = chain_signer(entries[0], keys)
    verify_chain(entries, key)
    return key


def fork_reason(key: str, seq: int) -> str:
    """Why an anchor fails whose entry differs from one seen before with the same key and seq."""
    return f"ledger fork: key {key} signed two different entries with seq {seq}"


class SeenEntries:
    """The hash of each ledger entry verified so far, one per (key, seq): a different entry at a place
    already taken is a fork (spec section 5.1). About 150 bytes an entry; it forgets nothing."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[int, bytes]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._by_key.values()))

    def see(self, key: str, seq: int, digest: bytes) -> bool:
        """Remember an entry's SHA-256; False when another entry took this key and seq first (a fork)."""
        seqs = self._by_key.get(key)
        if seqs is None:
            seqs = self._by_key[key] = {}
        return seqs.setdefault(seq, digest) == digest

    def pin(
        self,
        entries: Iterable[SignedEntry],
        keys: Iterable[Ed25519PublicKey],
        advance: Callable[[], None] | None = None,
    ) -> str:
        """Take a whole ledger (read once, its chain checked under one of ``keys``) as entries seen first, so
        that a receipt's different entry at one of its places is a fork; the key's id. ``LedgerError`` if it
        does not verify, ``LedgerForkError`` if it contradicts an entry seen before (then nothing is taken)."""
        it = iter(entries)
        first = next(it, None)
        if first is None:
            raise LedgerError("the ledger holds no entry")
        key = chain_signer(first, keys)
        digests: dict[int, bytes] = {}
        for signed, digest in iter_chain(itertools.chain([first], it), key):
            digests[signed.entry.seq] = digest
            if advance is not None:
                advance()
        kid = key_id(key)
        seqs = self._by_key.setdefault(kid, {})
        for seq, digest in digests.items():
            if seqs.get(seq, digest) != digest:
                raise LedgerForkError(fork_reason(kid, seq) + " (this ledger and an entry seen before it)")
        seqs.update(digests)
        return kid


@dataclass(frozen=True)
class LaneTip:
    """The newest chained window of a domain on a ledger: what its successor must follow."""

    chain_seq: int
    window_id: str
    window_end: str
    heads_root: str
    heads_size: int


def check_ledger_chains(entries: Iterable[SignedEntry], proofs: Mapping[str, str]) -> dict[str, LaneTip]:
    """Replay every domain's chain of windows on a ledger (spec section 14.7); the tip of each.

    ``proofs`` maps a proof's SHA-256 (hex) to its JSON text. ``LedgerError`` names the first bad entry:
    a place skipped, a gap in time, a missing proof, heads that do not only grow, or an unchained entry
    of a domain after its first chained one (a downgrade)."""
    tips: dict[str, LaneTip] = {}
    for signed in entries:
        e = signed.entry
        if e.domain is None or e.heads_root is None or e.heads_size is None:
            continue
        where = f"ledger entry {e.seq} (window {e.window_id}, domain {e.domain})"
        tip = tips.get(e.domain)
        if e.chain_seq is None:
            if tip is not None:
                raise LedgerError(f"{where}: an unchained entry after chained window {tip.window_id} of its domain")
            continue
        if tip is not None and tip.window_id == e.window_id:  # another tree of the tip's window
            if (e.chain_seq, e.heads_root, e.heads_size, e.window_end) != (
                tip.chain_seq,
                tip.heads_root,
                tip.heads_size,
                tip.window_end,
            ):
                raise LedgerError(f"{where}: a tree of window {e.window_id} with another chain position or heads")
            continue
        tips[e.domain] = next_window(tip, e, proofs.get(e.proof_hash or ""), where)
    return tips


def next_window(tip: LaneTip | None, e: LedgerEntry, proof: str | None, where: str) -> LaneTip:
    """The domain's tip once chained window ``e`` (with its proof's text) follows ``tip``; ``LedgerError``
    names what is wrong: the place, a gap in time, a missing proof, heads that do not only grow."""
    assert e.heads_root is not None and e.heads_size is not None and e.chain_seq is not None
    want = 0 if tip is None else tip.chain_seq + 1
    if e.chain_seq != want:
        raise LedgerError(f"{where}: chain position {e.chain_seq}, but the domain's next is {want}")
    if tip is not None and e.window_start != tip.window_end:
        raise LedgerError(
            f"{where}: a gap in time: it starts {e.window_start}, the window before ended {tip.window_end}"
        )
    if proof is None or hashlib.sha256(proof.encode("utf-8")).hexdigest() != e.proof_hash:
        raise LedgerError(f"{where}: its transition proof is not in ledger-proofs.jsonl")
    old = empty_heads()
    old_root, old_size = (old.root, old.size) if tip is None else (bytes.fromhex(tip.heads_root), tip.heads_size)
    try:
        check_transition(old_root, old_size, bytes.fromhex(e.heads_root), e.heads_size, strict_json.loads(proof))
    except (HeadsError, MalformedReceiptError, ValueError) as exc:
        raise LedgerError(f"{where}: its heads do not only grow from the window before: {exc}") from None
    return LaneTip(e.chain_seq, e.window_id, e.window_end, e.heads_root, e.heads_size)
