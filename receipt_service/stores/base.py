"""The store seam: what the service needs from durable storage (SQLite embedded, Redis shared)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from receipt_verifier import proof_id as pid
from receipt_verifier.model import Binding

from ..receipts import Submission


def seq_hashes(first_seq: int, hashes: bytes) -> Iterator[tuple[int, bytes]]:
    """Each item's (seq, hash) of a batch whose first item has ``first_seq``."""
    return ((first_seq + i // 32, hashes[i : i + 32]) for i in range(0, len(hashes), 32))


@dataclass(frozen=True, slots=True)
class Batch:
    """The hashes of one request, packed column-wise: item i received at ``first_ticks + i``."""

    tenant: str
    first_ticks: int
    proof_ids: bytes
    hashes: bytes
    nonces: bytes
    subject: str = ""  # the items' subject, if the request named one
    log_first: int = 0  # with a subject: the first item's position in the subject's log (set by the store)

    def __post_init__(self) -> None:
        n = len(self.hashes) // 32
        if n < 1 or len(self.hashes) != 32 * n or len(self.proof_ids) != 16 * n or len(self.nonces) != 16 * n:
            raise ValueError("a batch holds n >= 1 items: 16-byte proof ids, 32-byte hashes, 16-byte nonces")

    @property
    def count(self) -> int:
        """Number of hashes."""
        return len(self.hashes) // 32


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch as stored: its items hold ``seq`` numbers ``first_seq .. first_seq + count - 1``."""

    first_seq: int
    batch: Batch

    @property
    def last_seq(self) -> int:
        """The seq of the last item."""
        return self.first_seq + self.batch.count - 1

    def record(self, i: int) -> SubmissionRecord:
        """Item ``i`` (0-based) as a submission record."""
        b = self.batch
        return SubmissionRecord(
            self.first_seq + i,
            b.tenant,
            b.first_ticks + i,
            b.proof_ids[16 * i : 16 * i + 16],
            b.hashes[32 * i : 32 * i + 32],
            b.nonces[16 * i : 16 * i + 16],
            b.subject,
            b.log_first + i if b.subject else 0,
        )

    def between(self, first: int, last: int) -> StoredBatch:
        """The items with seq in ``first..last`` (the range must overlap this batch)."""
        lo, hi = max(first, self.first_seq) - self.first_seq, min(last, self.last_seq) - self.first_seq + 1
        if lo == 0 and hi == self.batch.count:
            return self
        b = self.batch
        return StoredBatch(
            self.first_seq + lo,
            Batch(
                b.tenant,
                b.first_ticks + lo,
                b.proof_ids[16 * lo : 16 * hi],
                b.hashes[32 * lo : 32 * hi],
                b.nonces[16 * lo : 16 * hi],
                b.subject,
                b.log_first + lo if b.subject else 0,
            ),
        )

    def columns(self, domain: str | None) -> tuple[bytes, bytes, bytes, bytes]:
        """(proof ids, hashes, nonces, binding digests), packed; no binding digests without a domain (v1)."""
        b = self.batch
        return b.proof_ids, b.hashes, b.nonces, binding_column(domain, b)


def insertion_order(rows: Iterable[tuple[str, int, bytes, int]]) -> dict[str, tuple[int, bytes]]:
    """(subject, size, root, first window's last seq) rows -> heads in the heads tree's insertion order:
    by the window a subject first appeared in, then by its key (spec section 14.5)."""
    ordered = sorted(rows, key=lambda r: (r[3], hashlib.sha256(r[0].encode("utf-8")).digest()))
    return {subject: (size, root) for subject, size, root, _ in ordered}


def binding(domain: str | None, subject: str, position: int) -> Binding | None:
    """The v2 binding of an item (None for a v1 item, which has no domain)."""
    if domain is None:
        return None
    return Binding(domain, subject, position) if subject else Binding(domain)


def binding_column(domain: str | None, b: Batch) -> bytes:
    """The binding digest of every item of a batch, packed (empty for v1)."""
    if domain is None:
        return b""
    if not b.subject:
        return Binding(domain).digest() * b.count
    return b"".join(Binding(domain, b.subject, b.log_first + i).digest() for i in range(b.count))


def tree_checksum(t: TreeRecord) -> bytes:
    """8-byte BLAKE2b over a tree row's fields (its root is checked by rebuilding the tree)."""
    text = f"{t.window_id}:{t.tree_index}:{t.first_seq}:{t.last_seq}:{t.window_start}:{t.window_end}:".encode()
    if t.heads_root is not None:  # trees without heads keep the checksum they always had
        text += f"{t.heads_size}:".encode() + t.heads_root
    return hashlib.blake2b(text + t.root, digest_size=8).digest()


def batch_checksum(first_seq: int, b: Batch) -> bytes:
    """16-byte BLAKE2b over every field of a stored batch (checked on each read)."""
    head = f"{first_seq}:{b.first_ticks}:{b.count}:{b.tenant}:"
    if b.subject:  # batches without a subject keep the checksum they always had
        head += f"{b.subject}:{b.log_first}:"
    h = hashlib.blake2b(head.encode(), digest_size=16)
    h.update(b.proof_ids)
    h.update(b.hashes)
    h.update(b.nonces)
    return h.digest()


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    """One stored submission; ``seq`` orders all submissions, windows are ranges of it."""

    seq: int
    tenant: str
    ticks: int
    proof_id: bytes
    hash: bytes
    nonce: bytes
    subject: str = ""
    log_pos: int = 0

    def to_submission(self, domain: str | None) -> Submission:
        """The core's view of this item (``domain`` is its lane's: None for v1)."""
        return Submission(
            _uuid_text(self.proof_id),
            self.hash.hex(),
            pid.ticks_to_received(self.ticks),
            self.nonce,
            binding(domain, self.subject, self.log_pos),
        )


def _uuid_text(b: bytes) -> str:
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class TreeRecord:
    """One window tree: the submission range it covers and its root."""

    window_id: str
    tree_index: int
    first_seq: int
    last_seq: int
    root: bytes
    window_start: str
    window_end: str
    heads_root: bytes | None = None  # domain lanes: the window's subject-heads commitment
    heads_size: int | None = None

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    """One (tree, target) anchoring job and, once done, the anchor's JSON."""

    window_id: str
    tree_index: int
    target: str
    anchor_json: str | None
    attempts: int
    last_error: str | None
    created_ns: int
    done_ns: int | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A tenant's API key: only the SHA-256 of its secret is stored."""

    key_id: str
    tenant: str
    secret_hash: bytes
    scopes: frozenset[str]
    created: str
    revoked: str | None
    role: str | None = None  # a Table I role; None: a key from before roles (v1 receipts, no domain)


@dataclass(frozen=True, slots=True)
class SubjectHead:
    """A subject log's head as a window committed it, with its compact range (to append without re-reading)."""

    subject: str
    size: int
    root: bytes
    frontier: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A registered public key (JWK): a subject's owner key or a receiving party's key."""

    key_id: str  # RFC 7638 thumbprint
    party: str  # the subject (owner keys) or the party's tenant name (receivers)
    tenant: str  # the tenant that registered it
    jwk: str  # the public JWK, JSON
    created: str


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An accepted access event and the proof id of its anchored hash."""

    replay_id: str
    event_hash: str
    owner: str
    receiver: str
    domain: str
    action: str
    time: str
    expiry: str | None
    doc: str  # the event JSON as accepted
    proof_id: str
    tenant: str  # who posted it (the service records reads under the reader's tenant)
    n: int = 0  # acceptance order (set by the store)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters for ``/metrics``."""

    submissions: int
    backlog: int
    trees: int
    pending_anchors: int
    wal_bytes: int = 0  # the embedded store's write-ahead log on disk (0 for Redis)


class Store(Protocol):
    """Durable storage for submissions, window trees, anchors and API keys.

    ``add_batch`` returns only once the batch is durable; every read checks the
    record's integrity and raises ``CorruptRecordError`` instead of returning bad data.
    Submissions are found by (clock sequence, receive ticks), the two fields of a proof id that
    make it unique: a store shared by several instances gives each its own clock sequence.
    ``lead`` answers the term of this instance's lead while it may close windows and send anchors
    (a store of one process always may), else None; the term changes whenever the lead was lost and
    taken again, when another leader may have moved the lane on. ``resign`` hands the lead over at a
    clean stop; ``watch`` calls ``wake(first_seq, last_seq)`` whenever another instance changed the
    state of those submissions, until cancelled (it returns at once if none can).
    """

    clock_seq: int
    instance_id: str
    domain: str | None  # the data-sharing domain of every submission in this store (None: v1, no domain)
    lease_seconds: float | None  # how long a lead lasts once ``lead`` was asked (None: it cannot run out)

    async def add_batch(self, batch: Batch) -> int: ...

    def last_ticks(self) -> int: ...

    async def get_submissions(self, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], SubmissionRecord]: ...

    async def has_clock(self, clock_seq: int) -> bool: ...

    async def lead(self) -> int | None: ...

    async def resign(self) -> None: ...

    async def watch(self, wake: Callable[[int, int], None]) -> None: ...

    async def backlog(self, limit: int, upto: int | None = None) -> list[StoredBatch]: ...  # seqs <= upto

    async def seal(self, floor: int) -> tuple[int, int]:
        """Raise the receive-time floor to at least ``floor`` ticks and past every stored receive time;
        returns (the last seq stored, the floor). From then on the store refuses a batch received
        before the floor (``TicksTakenError``: re-issue after it), so a window ending at the floor
        holds every hash received before it (spec section 14.7)."""
        ...

    async def min_ticks(self, after: int, upto: int) -> int | None:
        """The earliest receive ticks among seqs ``after+1..upto`` (None: none stored)."""
        ...

    async def commit_window(
        self,
        trees: Sequence[TreeRecord],
        targets: Sequence[str],
        heads: Sequence[SubjectHead] = (),
        *,
        term: int | None = None,
    ) -> None:
        """Record a window's trees, open anchor jobs and subject heads, and move the watermark; with
        ``term`` (what ``lead`` answered when the window was built) only while the lead is still in
        that term (``LeaseLostError`` otherwise: the window was built on state another leader may have
        moved)."""
        ...

    async def subject_frontier(self, subject: str, upto: int | None = None) -> SubjectHead | None: ...

    async def subject_heads(self, upto: int | None = None) -> dict[str, tuple[int, bytes]]: ...  # insertion order

    async def anchored_windows(self, before: str) -> list[TreeRecord]: ...

    async def tree_for_seq(self, seq: int) -> TreeRecord | None: ...

    async def tree_batches(self, tree: TreeRecord) -> list[StoredBatch]: ...

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]: ...

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]: ...

    async def record_anchor(self, tree: TreeRecord, target: str, anchor_json: str, done_ns: int) -> None: ...

    async def record_anchor_failure(self, tree: TreeRecord, target: str, error: str) -> None: ...

    async def put_fabric_block(self, channel: str, number: int, block: bytes) -> None: ...

    async def get_fabric_block(self, channel: str, number: int) -> bytes | None: ...

    async def purge(self, before_ns: int) -> int: ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def create_api_key(self, key: ApiKeyRecord) -> None: ...

    def revoke_api_key(self, key_id: str, when: str) -> bool: ...

    def list_api_keys(self) -> list[ApiKeyRecord]: ...

    async def subject_records(self, subject: str, after: int, limit: int) -> list[SubmissionRecord]: ...

    async def has_record(self, subject: str, record_hash: bytes) -> bool: ...

    async def register_subject(self, subject: str, tenant: str, key: SigningKeyRecord) -> None: ...

    async def subject_tenant(self, subject: str) -> str | None: ...

    async def add_signing_key(self, key: SigningKeyRecord) -> None: ...

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None: ...

    async def seen_event(self, replay_id: str) -> bool: ...

    async def add_event(self, event: EventRecord) -> bool: ...

    async def events(self, owner: str) -> list[EventRecord]: ...

    async def last_decision(self, owner: str, receiver: str, domain: str) -> EventRecord | None: ...

    async def stats(self) -> StoreStats: ...

    async def ping(self) -> None: ...

    def stopped(self) -> str | None:
        """Why this store takes no more writes until the process restarts; None while it can."""
        ...

    async def close(self) -> None: ...
