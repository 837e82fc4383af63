"""Batch proof-id issuance equals one-by-one issuance and never repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_service.ids import ProofIdIssuer, iso_us
from receipt_verifier import proof_id as pid


@settings(max_examples=200, deadline=None)
@given(
    clock_seq=st.integers(0, (1 << 14) - 1),
    unix_ns=st.integers(0, 4_000_000_000 * 10**9),
    hashes=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20),
    last=st.integers(0, 1 << 40),
)
def test_batch_matches_single(clock_seq: int, unix_ns: int, hashes: list[bytes], last: int) -> None:
    a, b = ProofIdIssuer(clock_seq, last), ProofIdIssuer(clock_seq, last)
    batch = a.issue_batch(hashes, unix_ns)
    assert [batch[i] for i in range(len(batch))] == [b.issue(h.hex(), unix_ns) for h in hashes]
    assert batch.hashes_hex == [h.hex() for h in hashes]
    for proof_id, h, received in zip(batch.proof_ids, hashes, batch.hash_received, strict=True):
        pid.check_binding(proof_id, h.hex(), received)
    assert a.issue_batch(hashes[:1], unix_ns).first_ticks == batch.first_ticks + len(hashes)


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999_999))  # up to 9999-12-31T23:59:59.999999999Z
@settings(max_examples=300)
def test_iso_us_is_the_utc_time_truncated_to_microseconds(unix_ns: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=unix_ns // 1000)
    assert iso_us(unix_ns) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso_us(unix_ns) == iso_us(unix_ns - unix_ns % 1000)  # truncated, never rounded up
