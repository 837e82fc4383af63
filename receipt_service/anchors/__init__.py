"""Anchor targets: the local signed ledger (``local``) and Fabric channels (``fabric``, imported on use)."""

from .base import AnchorBackend, BatchedBackend, ChainedBackend, anchor_json, iso_now
from .local import LocalLedgerBackend

__all__ = ["AnchorBackend", "BatchedBackend", "ChainedBackend", "LocalLedgerBackend", "anchor_json", "iso_now"]
