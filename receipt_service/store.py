"""The store seam: what the service needs from durable storage (SQLite now, Redis later)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from receipt_verifier import proof_id as pid

from .receipts import Submission


@dataclass(frozen=True, slots=True)
class NewSubmission:
    """A hash about to be stored: its id, receive time (UUID ticks), salt and tenant."""

    ticks: int
    proof_id: bytes
    hash: bytes
    nonce: bytes


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    """A stored submission; ``seq`` orders all submissions, windows are ranges of it."""

    seq: int
    tenant: str
    ticks: int
    proof_id: bytes
    hash: bytes
    nonce: bytes

    def to_submission(self) -> Submission:
        """The core's view of this row."""
        return Submission(_uuid_text(self.proof_id), self.hash.hex(), pid.ticks_to_received(self.ticks), self.nonce)


def _uuid_text(b: bytes) -> str:
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def row_checksum(seq: int, tenant: str, ticks: int, proof_id: bytes, hash_: bytes, nonce: bytes) -> bytes:
    """8-byte BLAKE2b over every field of a submission row (checked on each read)."""
    head = f"{seq}:{ticks}:{tenant}:".encode()
    return hashlib.blake2b(head + proof_id + hash_ + nonce, digest_size=8).digest()


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


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters for ``/metrics``."""

    submissions: int
    backlog: int
    trees: int
    pending_anchors: int


class Store(Protocol):
    """Durable storage for submissions, window trees, anchors and API keys.

    ``add_submissions`` returns only once the rows are durable; every read checks the
    record's integrity and raises ``CorruptRecordError`` instead of returning bad data.
    """

    clock_seq: int
    instance_id: str

    async def add_submissions(self, tenant: str, items: Sequence[NewSubmission]) -> int: ...

    def last_ticks(self) -> int: ...

    async def get_submissions(self, ticks: Sequence[int]) -> dict[int, SubmissionRecord]: ...

    async def backlog(self, limit: int) -> list[SubmissionRecord]: ...

    async def commit_window(self, trees: Sequence[tuple[TreeRecord, bytes]], targets: Sequence[str]) -> None: ...

    async def tree_for_seq(self, seq: int) -> TreeRecord | None: ...

    async def tree_leaves(self, tree: TreeRecord) -> bytes: ...

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]: ...

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]: ...

    async def record_anchor(self, tree: TreeRecord, target: str, anchor_json: str, done_ns: int) -> None: ...

    async def record_anchor_failure(self, tree: TreeRecord, target: str, error: str) -> None: ...

    async def purge(self, before_ns: int) -> int: ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def stats(self) -> StoreStats: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
