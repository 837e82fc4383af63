"""SHA-256 helpers and the RFC 6962 domain-separated tree hashes."""

from __future__ import annotations

import hashlib
import re

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_LEN = 32
NONCE_LEN = 16

_HEX_RE = re.compile(r"^[0-9A-Fa-f]{2,}$")


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def leaf_hash(commitment: bytes) -> bytes:
    """RFC 6962 leaf hash: H(0x00 || x)."""
    return hashlib.sha256(LEAF_PREFIX + commitment).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: H(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def salted_commitment(nonce: bytes, proof_id: bytes, record_hash: bytes) -> bytes:
    """The value a leaf commits to: H(nonce || proof_id || record_hash)."""
    return hashlib.sha256(nonce + proof_id + record_hash).digest()


def bound_commitment(nonce: bytes, proof_id: bytes, record_hash: bytes, binding: bytes) -> bytes:
    """The v2 leaf value: H(nonce || proof_id || record_hash || binding digest)."""
    return hashlib.sha256(nonce + proof_id + record_hash + binding).digest()


def op_value_bytes(value: str) -> bytes:
    """Decode an ``l``/``r`` op value as Chainpoint does.

    Even-length hex (at least 2 characters) is bytes, anything else is UTF-8.
    """
    if len(value) % 2 == 0 and _HEX_RE.fullmatch(value):
        return bytes.fromhex(value)
    return value.encode("utf-8")
