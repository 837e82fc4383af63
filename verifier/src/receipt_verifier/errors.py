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


class LedgerForkError(LedgerError):
    """The ledger key signed two different entries with one seq (spec section 5.1): proof of a fork."""


class AnchorPolicyError(VerificationError):
    """Too few anchors verified for the policy the caller chose."""


class TrustFileError(UsageError):
    """The Fabric trust file (or a config block given to build one) is unreadable or inconsistent."""


class FabricEvidenceError(VerificationError):
    """Fabric evidence does not prove the anchor; the subclass says which check failed."""


class BlockFormatError(FabricEvidenceError):
    """The evidence is not a well-formed Fabric block, or not the block the anchor names."""


class DataHashError(FabricEvidenceError):
    """The block header's data hash does not cover the block's envelopes."""


class OrdererSignatureError(FabricEvidenceError):
    """The block's orderer signatures do not satisfy the pinned block validation policy."""


class ConfigMismatchError(FabricEvidenceError):
    """The block was made under another channel configuration than the pinned one."""


class ChannelMismatchError(FabricEvidenceError):
    """The block or transaction belongs to another channel."""


class CreatorSignatureError(FabricEvidenceError):
    """The anchor transaction's creator, its signature or its transaction id is invalid."""


class EndorsementError(FabricEvidenceError):
    """The endorsements are invalid or do not satisfy the pinned endorsement policy."""


class WriteSetError(FabricEvidenceError):
    """The transaction does not write the receipt's root under the anchor's key."""


class IdentityError(FabricEvidenceError):
    """A certificate does not chain to the pinned roots of its organisation, or has no such role."""


class MalformedEventError(MalformedReceiptError):
    """An access event is not of the spec's form (section 13)."""


class EventSignatureError(VerificationError):
    """An access event's signature does not verify, or its key is not the one pinned."""


class HistoryError(VerificationError):
    """A history bundle does not prove the complete, current log it claims."""
