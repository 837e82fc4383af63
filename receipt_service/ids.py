"""Issuing proof ids: strictly increasing UUIDv1 timestamps, so every submission gets its own id."""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from receipt_verifier import proof_id as pid


@dataclass(frozen=True)
class IssuedId:
    """A proof id with the receive time it encodes."""

    proof_id: str
    proof_id_bytes: bytes
    hash_received: str
    ticks: int


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICKS_PER_US = 10  # window times are whole microseconds; receive times are 100 ns ticks


def ceil_us(ticks: int) -> int:
    """The first whole microsecond at or after ``ticks`` (in ticks)."""
    return -(-ticks // TICKS_PER_US) * TICKS_PER_US


def ticks_unix_ns(ticks: int) -> int:
    """Unix nanoseconds of proof-id ticks."""
    return (ticks - pid.UUID_EPOCH_OFFSET) * 100


def iso_ticks(iso: str) -> int:
    """Proof-id ticks of an RFC 3339 UTC time with at most microseconds (a window's start or end)."""
    moment = datetime.fromisoformat(iso)
    return (moment - _EPOCH) // timedelta(microseconds=1) * TICKS_PER_US + pid.UUID_EPOCH_OFFSET


def ticks_iso(ticks: int) -> str:
    """A window time (whole microseconds) in ticks, as RFC 3339 UTC with microseconds."""
    if ticks % TICKS_PER_US:
        raise ValueError("window times are whole microseconds")
    return iso_us(ticks_unix_ns(ticks))


def iso_us(unix_ns: int) -> str:
    """RFC 3339 UTC with microseconds, truncated (never later than ``unix_ns``)."""
    seconds, rest = divmod(unix_ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    """The whole-second part (every answer within a second shares it, hence the cache)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class ProofIdIssuer:
    """Turns (hash, clock reading) into proof ids; pure: the caller passes time in.

    Timestamps are 100 ns ticks; when the clock does not advance (or steps back) the issuer
    uses the previous tick + 1, so ids from one issuer never repeat.
    """

    def __init__(self, clock_seq: int, last_ticks: int = 0) -> None:
        if not 0 <= clock_seq < 1 << 14:
            raise ValueError("clock_seq must fit in 14 bits")
        self.clock_seq = clock_seq
        self._last = last_ticks

    def resume_after(self, ticks: int) -> None:
        """Issue only past ``ticks`` from now on (another instance used them on this clock sequence)."""
        self._last = max(self._last, ticks)

    def issue(self, hash_hex: str, unix_ns: int) -> IssuedId:
        """A fresh id for ``hash_hex`` received at ``unix_ns``."""
        ticks = max(pid.unix_ns_to_ticks(unix_ns), self._last + 1)
        self._last = ticks
        u = pid.make_proof_id(ticks, self.clock_seq, hash_hex)
        return IssuedId(str(u), u.bytes, pid.ticks_to_received(ticks), ticks)

    def issue_batch(self, hashes: Sequence[bytes], unix_ns: int) -> IssuedBatch:
        """Ids for a request's hashes on consecutive ticks (the same ids ``issue`` gives one by one)."""
        first = max(pid.unix_ns_to_ticks(unix_ns), self._last + 1)
        self._last = first + len(hashes) - 1
        cs = self.clock_seq
        clock = bytes([0x80 | (cs >> 8), cs & 0xFF, 0x01])  # variant + clock_seq, then the node's 0x01
        base = _NODE_HASH
        pack = _TIME_FIELDS.pack
        ids: list[str] = []
        raw: list[bytes] = []
        received: list[str] = []
        hexes: list[str] = []
        for ticks, h in enumerate(hashes, first):
            hx = h.hex()
            node = base.copy()
            node.update(f"{ticks}:{cs}:{hx}".encode())
            b = (
                pack(ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF, ((ticks >> 48) & 0x0FFF) | 0x1000)
                + clock
                + node.digest()
            )
            s = b.hex()
            ids.append(f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}")
            raw.append(b)
            hexes.append(hx)
            received.append(pid.ticks_to_received(ticks))
        return IssuedBatch(first, ids, b"".join(raw), received, hexes)


_TIME_FIELDS = struct.Struct(">IHH")
_NODE_HASH = hashlib.blake2s(digest_size=5, person=pid.PERSONALISATION)  # copied for each id, never updated


@dataclass(frozen=True)
class IssuedBatch:
    """Ids for one request, column-wise: item i was received at ``first_ticks + i``."""

    first_ticks: int
    proof_ids: list[str]
    proof_id_bytes: bytes
    hash_received: list[str]
    hashes_hex: list[str]

    def __len__(self) -> int:
        return len(self.proof_ids)

    def __getitem__(self, i: int) -> IssuedId:
        return IssuedId(
            self.proof_ids[i], self.proof_id_bytes[16 * i : 16 * i + 16], self.hash_received[i], self.first_ticks + i
        )
