"""``proof_id``: a version-1 UUID that binds the record hash and its receive time.

Layout (RFC 9562 UUIDv1 fields):
- timestamp: receive time in 100 ns ticks since 1582-10-15 (the UUID epoch);
- clock_seq: 14 bits chosen by the service (it keeps ids unique);
- node: ``0x01`` followed by the 5-byte BLAKE2s digest (personalisation ``hrcpt-v1``) of
  the ASCII text ``"<ticks>:<clock_seq>:<hash hex, lowercase>"``.

Anyone holding the hash recomputes the node field and checks the id; ``hash_received``
is the id's timestamp rendered as ISO 8601 UTC with seven fractional digits.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .errors import MalformedReceiptError, ProofIdMismatchError

UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100 ns ticks from 1582-10-15 to 1970-01-01
PERSONALISATION = b"hrcpt-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_RECEIVED_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{7})Z$")


_NODE_HASH = hashlib.blake2s(digest_size=5, person=PERSONALISATION)


def node_field(ticks: int, clock_seq: int, hash_hex: str) -> bytes:
    """The 6-byte node field for these inputs."""
    h = _NODE_HASH.copy()  # cheaper than passing the personalisation again
    h.update(f"{ticks}:{clock_seq}:{hash_hex.lower()}".encode("ascii"))
    return b"\x01" + h.digest()


def make_proof_id(ticks: int, clock_seq: int, hash_hex: str) -> uuid.UUID:
    """Build the proof id for a hash received at UUID time ``ticks``."""
    if not 0 <= ticks < 1 << 60:
        raise ValueError("timestamp outside the UUIDv1 range")
    if not 0 <= clock_seq < 1 << 14:
        raise ValueError("clock_seq must fit in 14 bits")
    node = int.from_bytes(node_field(ticks, clock_seq, hash_hex), "big")
    return uuid.UUID(
        fields=(
            ticks & 0xFFFFFFFF,
            (ticks >> 32) & 0xFFFF,
            ((ticks >> 48) & 0x0FFF) | 0x1000,
            0x80 | ((clock_seq >> 8) & 0x3F),
            clock_seq & 0xFF,
            node,
        )
    )


def unix_ns_to_ticks(unix_ns: int) -> int:
    """UUID ticks for a Unix time in nanoseconds (truncated to 100 ns)."""
    return unix_ns // 100 + UUID_EPOCH_OFFSET


def ticks_to_received(ticks: int) -> str:
    """Render UUID ticks as ``hash_received`` (``YYYY-MM-DDTHH:MM:SS.fffffffZ``)."""
    seconds, frac = divmod(ticks - UUID_EPOCH_OFFSET, 10_000_000)
    return f"{_second(seconds)}.{frac:07d}Z"


@functools.lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    """The whole-second part (receipts of one window share it, hence the cache)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def received_to_ticks(received: str) -> int:
    """Parse ``hash_received`` back to UUID ticks."""
    m = _RECEIVED_RE.fullmatch(received)
    if m is None:
        raise MalformedReceiptError(f"hash_received {received!r} is not of the form YYYY-MM-DDTHH:MM:SS.fffffffZ")
    try:
        seconds = _seconds(*m.groups()[:6])
    except ValueError as exc:
        raise MalformedReceiptError(f"hash_received {received!r} is not a real time: {exc}") from None
    return seconds * 10_000_000 + int(m[7]) + UUID_EPOCH_OFFSET


@functools.lru_cache(maxsize=1024)
def _seconds(y: str, mo: str, d: str, h: str, mi: str, s: str) -> int:
    """Unix seconds of a ``hash_received``'s whole-second fields (receipts of a window share them)."""
    moment = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(seconds=1)


@dataclass(frozen=True)
class ProofIdParts:
    """The fields of a parsed proof id."""

    ticks: int
    clock_seq: int
    node: bytes


def parse_proof_id(text: str) -> ProofIdParts:
    """Parse and check the UUID version and variant of a proof id."""
    if _UUID_RE.fullmatch(text) is None:
        raise MalformedReceiptError(f"proof_id {text!r} must be a lowercase hyphenated UUID")
    parts = _fields(int(text.replace("-", ""), 16))
    if parts is None:
        raise MalformedReceiptError(f"proof_id {text!r} is not an RFC 9562 version-1 UUID")
    return ProofIdParts(*parts)


def _fields(n: int) -> tuple[int, int, bytes] | None:
    """(ticks, clock_seq, node) of a UUID as an integer; None unless it is version 1, variant RFC 9562."""
    time_hi_version = (n >> 64) & 0xFFFF
    clock_hi = (n >> 56) & 0xFF
    if time_hi_version >> 12 != 1 or clock_hi >> 6 != 0b10:
        return None
    ticks = ((time_hi_version & 0x0FFF) << 48) | (((n >> 80) & 0xFFFF) << 32) | (n >> 96)
    clock_seq = ((clock_hi & 0x3F) << 8) | ((n >> 48) & 0xFF)
    return ticks, clock_seq, (n & 0xFFFFFFFFFFFF).to_bytes(6, "big")


def binding_holds(proof_id: str, hash_hex: str, hash_received: str) -> bool:
    """Whether a proof id already known to be a lowercase hyphenated UUID binds the hash and time.

    The one-pass paths' check; ``check_binding`` says what is wrong when this is False."""
    parts = _fields(int(proof_id.replace("-", ""), 16))
    return (
        parts is not None
        and parts[2] == node_field(parts[0], parts[1], hash_hex)
        and ticks_to_received(parts[0]) == hash_received
    )


def check_binding(proof_id: str, hash_hex: str, hash_received: str) -> None:
    """Raise unless ``proof_id`` binds ``hash_hex`` and ``hash_received``."""
    parts = parse_proof_id(proof_id)
    if parts.node != node_field(parts.ticks, parts.clock_seq, hash_hex):
        raise ProofIdMismatchError(
            f"proof_id {proof_id} was not issued for hash {hash_hex}: its node field does not match"
        )
    if ticks_to_received(parts.ticks) != hash_received:
        raise ProofIdMismatchError(
            f"hash_received {hash_received} differs from the time inside proof_id {proof_id}"
            f" ({ticks_to_received(parts.ticks)})"
        )
