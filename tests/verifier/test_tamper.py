"""Property: any single-byte change in a valid receipt raises or leaves the verified root unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receipt_verifier import AnchorPolicy, AnchorStatus, Verifier
from receipt_verifier.errors import Error
from receipt_verifier.ledger import load_public_key_file
from tests.conftest import VECTORS, load_vector

KEY = load_public_key_file(VECTORS / "ledger-key.pem")
CASES = ["valid/leaf0-of-3.json", "valid/leaf2-of-3.json", "valid/single-leaf.json"]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CASES), st.data())
def test_single_byte_change(name: str, data: st.DataObject) -> None:
    original = (VECTORS / name).read_bytes()
    vector = load_vector(name)
    clean = Verifier([KEY]).verify(original, record_hash=vector["hash"])
    pos = data.draw(st.integers(0, len(original) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    tampered = original[:pos] + bytes([new]) + original[pos + 1 :]
    try:
        result = Verifier([KEY]).verify_policy(tampered, AnchorPolicy.parse("all"), record_hash=vector["hash"])
    except Error:
        return
    assert result.root == clean.root
    assert all(a.status is AnchorStatus.VERIFIED for a in result.anchors)
