"""Offline verifier for health-record proof receipts (receipt v1).

Trusts nothing the issuing service says: it recomputes the Merkle path from the record
hash and checks each anchor against pinned keys.
"""

from .codec import Limits, dumps, parse_receipt, receipt_to_dict
from .errors import (
    AnchorPolicyError,
    BranchError,
    Error,
    HashMismatchError,
    LedgerError,
    LedgerForkError,
    LimitExceededError,
    MalformedReceiptError,
    ProofIdMismatchError,
    UnknownContextError,
    UsageError,
    VerificationError,
)
from .model import Receipt
from .verify import AnchorPolicy, AnchorResult, AnchorStatus, VerificationResult, Verifier

__all__ = [
    "AnchorPolicy",
    "AnchorPolicyError",
    "AnchorResult",
    "AnchorStatus",
    "BranchError",
    "Error",
    "HashMismatchError",
    "LedgerError",
    "LedgerForkError",
    "LimitExceededError",
    "Limits",
    "MalformedReceiptError",
    "ProofIdMismatchError",
    "Receipt",
    "UnknownContextError",
    "UsageError",
    "VerificationError",
    "VerificationResult",
    "Verifier",
    "dumps",
    "parse_receipt",
    "receipt_to_dict",
]
__version__ = "1.0.0"
