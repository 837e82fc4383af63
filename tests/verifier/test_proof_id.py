"""proof_id binds hash and receive time; hash_received is derived from it."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receipt_verifier import MalformedReceiptError, ProofIdMismatchError
from receipt_verifier import proof_id as pid

H = "ab" * 32


def test_roundtrip_and_binding() -> None:
    ticks = pid.unix_ns_to_ticks(1_763_712_000_123_456_700)
    u = pid.make_proof_id(ticks, 77, H)
    assert u.version == 1 and u.variant == uuid.RFC_4122
    received = pid.ticks_to_received(ticks)
    assert received == "2025-11-21T08:00:00.1234567Z"
    assert pid.received_to_ticks(received) == ticks
    parts = pid.parse_proof_id(str(u))
    assert (parts.ticks, parts.clock_seq) == (ticks, 77)
    assert parts.node[0] == 1  # the multicast bit marks a non-MAC node field
    pid.check_binding(str(u), H, received)


def test_binding_fails_for_another_hash_or_time() -> None:
    ticks = pid.unix_ns_to_ticks(1_763_712_000_000_000_000)
    u = str(pid.make_proof_id(ticks, 1, H))
    received = pid.ticks_to_received(ticks)
    with pytest.raises(ProofIdMismatchError, match="not issued for hash"):
        pid.check_binding(u, "cd" * 32, received)
    with pytest.raises(ProofIdMismatchError, match="differs from the time"):
        pid.check_binding(u, H, pid.ticks_to_received(ticks + 1))


def test_rejects_other_uuid_versions() -> None:
    with pytest.raises(MalformedReceiptError, match="version-1"):
        pid.parse_proof_id(str(uuid.uuid4()))
    with pytest.raises(MalformedReceiptError, match="lowercase"):
        pid.parse_proof_id(str(pid.make_proof_id(10**17, 1, H)).upper())


def test_received_must_be_a_real_time() -> None:
    with pytest.raises(MalformedReceiptError, match="not a real time"):
        pid.received_to_ticks("2025-02-30T00:00:00.0000000Z")
    with pytest.raises(MalformedReceiptError, match="not of the form"):
        pid.received_to_ticks("2025-02-03T00:00:00Z")


@given(st.integers(0, (1 << 60) - 1), st.integers(0, (1 << 14) - 1), st.binary(min_size=32, max_size=32))
def test_every_field_survives_the_round_trip(ticks: int, clock_seq: int, digest: bytes) -> None:
    """A mutation of any mask or shift in make_proof_id or parse_proof_id breaks this."""
    u = pid.make_proof_id(ticks, clock_seq, digest.hex())
    assert u.version == 1 and u.variant == uuid.RFC_4122
    parts = pid.parse_proof_id(str(u))
    assert (parts.ticks, parts.clock_seq) == (ticks, clock_seq)
    assert parts.node == pid.node_field(ticks, clock_seq, digest.hex())
    assert u.time == ticks and u.clock_seq == clock_seq  # the standard library reads the same fields


@pytest.mark.parametrize(("ticks", "clock_seq"), [(-1, 0), (1 << 60, 0), (0, -1), (0, 1 << 14)])
def test_values_outside_the_uuid_fields_are_refused(ticks: int, clock_seq: int) -> None:
    with pytest.raises(ValueError, match=r"UUIDv1 range|14 bits"):
        pid.make_proof_id(ticks, clock_seq, H)


def test_the_largest_values_fit() -> None:
    u = pid.make_proof_id((1 << 60) - 1, (1 << 14) - 1, H)
    parts = pid.parse_proof_id(str(u))
    assert (parts.ticks, parts.clock_seq) == ((1 << 60) - 1, (1 << 14) - 1)


@given(st.integers(min_value=0, max_value=(2100 - 1970) * 365 * 86400 * 10**7))
def test_received_times_parse_back_to_their_ticks(offset: int) -> None:
    ticks = pid.UUID_EPOCH_OFFSET + offset
    assert pid.received_to_ticks(pid.ticks_to_received(ticks)) == ticks


def test_make_proof_id_names_the_field_out_of_range() -> None:
    with pytest.raises(ValueError) as err:
        pid.make_proof_id(1 << 60, 0, H)
    assert str(err.value) == "timestamp outside the UUIDv1 range"
    with pytest.raises(ValueError) as err:
        pid.make_proof_id(0, 1 << 14, H)
    assert str(err.value) == "clock_seq must fit in 14 bits"
