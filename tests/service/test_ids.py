"""Batch proof-id issuance equals one-by-one issuance and never repeats."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from receipt_service.ids import ProofIdIssuer
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
