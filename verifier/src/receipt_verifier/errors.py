"""One exception hierarchy for everything the verifier can reject.

Every error names what is wrong and, where it helps, what to do about it.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every error raised by ``receipt_verifier``."""

    def diagnostics(self) -> str:
        """A message for a person, one paragraph."""
        return str(self)


class UsageError(Error):
    """The caller asked for something impossible (bad arguments, unreadable file)."""


class MalformedReceiptError(Error):
    """The receipt does not follow the v1 format (syntax, schema, limits)."""


class LimitExceededError(MalformedReceiptError):
    """The receipt is larger or deeper than the verifier accepts."""


class UnknownContextError(MalformedReceiptError):
    """The receipt's ``@context`` is not one this verifier ships."""


class VerificationError(Error):
    """The receipt is well formed but does not prove what it claims."""


class ProofIdMismatchError(VerificationError):
    """``proof_id`` does not bind the receipt's hash and receive time."""


class HashMismatchError(VerificationError):
    """The record (or record hash) given does not match the receipt's ``hash``."""


class BranchError(VerificationError):
    """The Merkle branch does not have the v1 shape for the claimed leaf and tree."""


class LedgerError(VerificationError):
    """A local-ledger entry, signature or chain is invalid."""


class AnchorPolicyError(VerificationError):
    """Too few anchors verified for the policy the caller chose."""
