"""Issuing proof ids: strictly increasing UUIDv1 timestamps, so every submission gets its own id."""

from __future__ import annotations

from dataclasses import dataclass

from receipt_verifier import proof_id as pid


@dataclass(frozen=True)
class IssuedId:
    """A proof id with the receive time it encodes."""

    proof_id: str
    proof_id_bytes: bytes
    hash_received: str
    ticks: int


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

    def issue(self, hash_hex: str, unix_ns: int) -> IssuedId:
        """A fresh id for ``hash_hex`` received at ``unix_ns``."""
        ticks = max(pid.unix_ns_to_ticks(unix_ns), self._last + 1)
        self._last = ticks
        u = pid.make_proof_id(ticks, self.clock_seq, hash_hex)
        return IssuedId(str(u), u.bytes, pid.ticks_to_received(ticks), ticks)
