"""Anchor targets: the local signed ledger (``local``) and Fabric channels (``fabric``, imported on use)."""

from .base import AnchorBackend, anchor_json, iso_now
from .local import LocalLedgerBackend

__all__ = ["AnchorBackend", "LocalLedgerBackend", "anchor_json", "iso_now"]
