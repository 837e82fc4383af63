"""Health-record anchoring service: hashes in, Merkle trees per time window, anchored roots, receipts out."""

__version__ = "1.0.0"
