"""Pure receipt construction: windows of submissions -> trees -> v1/v2 receipts (no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from receipt_verifier.hashing import bound_commitment, salted_commitment
from receipt_verifier.merkle import MerkleTree, Side, all_audit_paths
from receipt_verifier.model import (
    BRANCH_LABEL,
    Anchor,
    Binding,
    Branch,
    Op,
    PendingAnchor,
    Receipt,
    State,
    TreeInfo,
)

DEFAULT_MAX_LEAVES = 25_000

_HASH = Op("op", "sha-256")
_LEAF = Op("l", "00")
_NODE = Op("l", "01")


@dataclass(frozen=True)
class Submission:
    """An accepted hash: what the service stored before acknowledging it."""

    proof_id: str
    hash: str
    hash_received: str
    nonce: bytes
    binding: Binding | None = None  # domain (and subject, log position): a v2 leaf

    def commitment(self) -> bytes:
        """The salted leaf value H(nonce || proof_id || hash), v2: || H(binding)."""
        pid = bytes.fromhex(self.proof_id.replace("-", ""))
        if self.binding is None:
            return salted_commitment(self.nonce, pid, bytes.fromhex(self.hash))
        return bound_commitment(self.nonce, pid, bytes.fromhex(self.hash), self.binding.digest())


@dataclass(frozen=True)
class WindowTree:
    """One tree of a window: its submissions in leaf order and the built tree."""

    window_id: str
    tree_index: int
    submissions: tuple[Submission, ...]
    tree: MerkleTree

    @property
    def root_hex(self) -> str:
        """Hex root."""
        return self.tree.root.hex()


def build_window(
    window_id: str, submissions: Sequence[Submission], max_leaves: int = DEFAULT_MAX_LEAVES
) -> list[WindowTree]:
    """Split a window's submissions (in receive order) into trees of at most ``max_leaves``."""
    if max_leaves < 1:
        raise ValueError("max_leaves must be at least 1")
    trees = []
    for index, start in enumerate(range(0, len(submissions), max_leaves)):
        chunk = tuple(submissions[start : start + max_leaves])
        trees.append(WindowTree(window_id, index, chunk, MerkleTree.from_commitments([s.commitment() for s in chunk])))
    return trees


def path_ops(sub: Submission, path: Sequence[tuple[Side, bytes]]) -> list[Op]:
    """The v1 (v2: with the binding's ``r`` op) ops from the record hash to the tree root."""
    ops = [Op("l", sub.nonce.hex() + sub.proof_id.replace("-", ""))]
    if sub.binding is not None:
        ops.append(Op("r", sub.binding.digest().hex()))
    ops += [_HASH, _LEAF, _HASH]
    for side, sibling in path:
        ops.append(Op(side.value, sibling.hex()))
        ops.append(_NODE)
        ops.append(_HASH)
    return ops


def render(
    sub: Submission,
    *,
    tree: TreeInfo | None = None,
    path: Sequence[tuple[Side, bytes]] = (),
    anchors: Sequence[Anchor] = (),
    pending: Sequence[PendingAnchor] = (),
) -> Receipt:
    """A receipt in whatever state the submission has reached."""
    if tree is None:
        return Receipt(
            sub.hash, sub.proof_id, sub.hash_received, "pending", pending_anchors=tuple(pending), binding=sub.binding
        )
    ops = path_ops(sub, path)
    if anchors:
        ops.append(Op("anchors", "", tuple(anchors)))
    state: State = "anchored" if anchors and not pending else "aggregated"
    return Receipt(
        sub.hash,
        sub.proof_id,
        sub.hash_received,
        state,
        branches=(Branch(tuple(ops), BRANCH_LABEL),),
        tree=tree,
        pending_anchors=tuple(pending),
        binding=sub.binding,
    )


def render_tree(wt: WindowTree, anchors: Sequence[Anchor] = (), pending: Sequence[PendingAnchor] = ()) -> list[Receipt]:
    """Receipts for every leaf of one window tree."""
    paths = all_audit_paths(wt.tree)
    size = wt.tree.size
    return [
        render(
            sub, tree=TreeInfo(wt.window_id, wt.tree_index, i, size), path=paths[i], anchors=anchors, pending=pending
        )
        for i, sub in enumerate(wt.submissions)
    ]
