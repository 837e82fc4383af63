"""Typed value objects for receipts v1 and v2 (wire format in ``proof_spec/``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

CONTEXT_V1 = "https://w3id.org/health-receipt/v1"
CONTEXT_V2 = "https://w3id.org/health-receipt/v2"
RECEIPT_TYPE = "HealthReceipt"
BRANCH_LABEL = "window_tree"

State = Literal["pending", "aggregated", "anchored"]
STATES: tuple[State, ...] = ("pending", "aggregated", "anchored")


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of the local signed ledger: a window tree's root, chained to the previous entry."""

    seq: int
    prev: str
    window_id: str
    tree_index: int
    tree_size: int
    root: str
    window_start: str
    window_end: str
    time: str
    # v2 entries (trees of a domain lane): the domain and the window's subject-heads commitment (spec section 14)
    domain: str | None = None
    heads_root: str | None = None
    heads_size: int | None = None
    # v3 entries (chained windows, spec section 14.7): the window's place in its domain's chain on this
    # ledger and the SHA-256 of its transition proof, kept beside the ledger
    chain_seq: int | None = None
    proof_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Wire form (field order irrelevant: canonical bytes sort keys)."""
        out = self._v1()
        if self.heads_root is not None:
            out.update(v=2, domain=self.domain, heads_root=self.heads_root, heads_size=self.heads_size)
        if self.chain_seq is not None:
            out.update(v=3, chain_seq=self.chain_seq, proof_hash=self.proof_hash)
        return out

    def _v1(self) -> dict[str, Any]:
        return {
            "v": 1,
            "seq": self.seq,
            "prev": self.prev,
            "window_id": self.window_id,
            "tree_index": self.tree_index,
            "tree_size": self.tree_size,
            "root": self.root,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "time": self.time,
        }

    def canonical_bytes(self) -> bytes:
        """Sorted-key, no-whitespace, ASCII JSON: the bytes that are hashed and signed (made once per entry)."""
        made: bytes | None = self.__dict__.get("_canonical")
        if made is None:
            made = canonical_json(self.to_dict())
            object.__setattr__(self, "_canonical", made)
        return made

    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes: the entry hash a fork check compares (made once per entry)."""
        made: bytes | None = self.__dict__.get("_digest")
        if made is None:
            made = hashlib.sha256(self.canonical_bytes()).digest()
            object.__setattr__(self, "_digest", made)
        return made


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Canonical JSON for objects holding only strings and integers (RFC 8785 subset)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True)
class LocalAnchor:
    """The root is entry ``seq`` of the local ledger signed by key ``key_id``."""

    anchor_id: str
    key_id: str
    entry: LedgerEntry
    signature: str
    type: Literal["local"] = "local"


@dataclass(frozen=True)
class FabricAnchor:
    """The root was written by our chaincode in a Fabric transaction."""

    anchor_id: str
    channel: str
    tx_id: str
    block_number: int
    key: str
    chaincode: str
    uris: tuple[str, ...] = ()
    type: Literal["fabric"] = "fabric"


@dataclass(frozen=True)
class UnknownAnchor:
    """An anchor type this verifier does not know: kept as is, never counted as verified."""

    type: str
    anchor_id: str
    raw: Mapping[str, Any] = field(default_factory=dict)


Anchor = LocalAnchor | FabricAnchor | UnknownAnchor


class Op(NamedTuple):
    """One Chainpoint op: ``l``/``r`` (value), ``op`` (hash name) or ``anchors``."""

    kind: Literal["l", "r", "op", "anchors"]
    value: str = ""
    anchors: tuple[Anchor, ...] = ()


@dataclass(frozen=True)
class Branch:
    """A list of ops; child branches start from this branch's final value."""

    ops: tuple[Op, ...]
    label: str | None = None
    branches: tuple[Branch, ...] = ()


@dataclass(frozen=True)
class TreeInfo:
    """Where the leaf sits: window, tree within the window, leaf index, tree size."""

    window_id: str
    tree_index: int
    leaf_index: int
    tree_size: int


@dataclass(frozen=True)
class PendingAnchor:
    """An anchor target that has not completed yet."""

    type: str
    target: str


@dataclass(frozen=True)
class Binding:
    """What a v2 leaf commits to besides the record hash: its domain and, optionally, subject and log position."""

    domain: str
    subject: str | None = None
    subject_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (``subject`` and ``subject_seq`` come together)."""
        out: dict[str, Any] = {"domain": self.domain}
        if self.subject is not None:
            out["subject"] = self.subject
            out["subject_seq"] = self.subject_seq
        return out

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of ``to_dict()``: the value of the v2 branch's ``r`` op."""
        return hashlib.sha256(canonical_json(self.to_dict())).digest()


@dataclass(frozen=True)
class Receipt:
    """A proof receipt for one submitted hash."""

    hash: str
    proof_id: str
    hash_received: str
    state: State
    branches: tuple[Branch, ...] = ()
    tree: TreeInfo | None = None
    pending_anchors: tuple[PendingAnchor, ...] = ()
    binding: Binding | None = None  # v2 receipts only

    @property
    def context(self) -> str:
        """The version URL: v2 when the leaf is bound to a domain."""
        return CONTEXT_V1 if self.binding is None else CONTEXT_V2

    def anchors(self) -> list[Anchor]:
        """Every anchor in every branch, in document order."""
        found: list[Anchor] = []

        def walk(branch: Branch) -> None:
            for op in branch.ops:
                if op.kind == "anchors":
                    found.extend(op.anchors)
            for child in branch.branches:
                walk(child)

        for b in self.branches:
            walk(b)
        return found
