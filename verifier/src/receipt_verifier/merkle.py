"""RFC 6962 / RFC 9162 Merkle trees over a closed list of leaves (pure, hashlib only).

Odd nodes are promoted to the next level, never duplicated, which yields exactly the
RFC 6962 tree (split at the largest power of two below n).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import chain

MAX_TREE_SIZE = 1 << 32


class Side(Enum):
    """Which side the sibling sits on at one level of an audit path."""

    LEFT = "l"
    RIGHT = "r"


def path_shape(index: int, size: int) -> list[Side | None]:
    """The sibling side at every level for leaf ``index`` of a tree of ``size`` leaves.

    ``None`` marks a level where the node is promoted (no sibling, no hashing).
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside a tree of {size} leaves")
    shape: list[Side | None] = []
    while size > 1:
        if index & 1:
            shape.append(Side.LEFT)
        elif index + 1 < size:
            shape.append(Side.RIGHT)
        else:
            shape.append(None)
        index >>= 1
        size = (size + 1) >> 1
    return shape


def sibling_kinds(index: int, size: int) -> list[str]:
    """``path_shape`` as v1 op kinds: ``"l"``/``"r"`` per level that has a sibling (hot path: no enum)."""
    kinds = []
    while size > 1:
        if index & 1:
            kinds.append("l")
        elif index + 1 < size:
            kinds.append("r")
        index >>= 1
        size = (size + 1) >> 1
    return kinds


@dataclass(frozen=True)
class MerkleTree:
    """A built tree: ``levels[0]`` are leaf hashes, ``levels[-1] == [root]``."""

    levels: tuple[tuple[bytes, ...], ...]

    @classmethod
    def from_leaf_hashes(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """Build every level from already domain-separated leaf hashes."""
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        if len(leaves) > MAX_TREE_SIZE:
            raise ValueError(f"a tree holds at most {MAX_TREE_SIZE} leaves")
        sha = hashlib.sha256
        level = tuple(leaves)
        levels = [level]
        while len(level) > 1:
            it = iter(level)
            nxt = [sha(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=False)]
            if len(level) & 1:
                nxt.append(level[-1])
            level = tuple(nxt)
            levels.append(level)
        return cls(tuple(levels))

    @classmethod
    def from_commitments(cls, commitments: Sequence[bytes]) -> MerkleTree:
        """Build from leaf values x (leaf hash = H(0x00 || x))."""
        sha = hashlib.sha256
        return cls.from_leaf_hashes([sha(b"\x00" + c).digest() for c in commitments])

    @property
    def root(self) -> bytes:
        """The tree head."""
        return self.levels[-1][0]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def audit_path(self, index: int) -> list[tuple[Side, bytes]]:
        """Siblings from leaf to root, each with its side; promoted levels are skipped."""
        size = self.size
        if not 0 <= index < size:
            raise IndexError(f"leaf index {index} outside a tree of {size} leaves")
        path: list[tuple[Side, bytes]] = []
        for level in self.levels[:-1]:
            if index & 1:
                path.append((Side.LEFT, level[index - 1]))
            elif index + 1 < len(level):
                path.append((Side.RIGHT, level[index + 1]))
            index >>= 1
        return path


def all_audit_paths(tree: MerkleTree) -> list[tuple[tuple[Side, bytes], ...]]:
    """Every leaf's audit path at once (leaf to root), built top-down level by level."""
    # The paths are millions of small acyclic tuples: the cyclic GC would only rescan them
    # (it doubles the time at 100k leaves), so it is paused while they are built.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _all_audit_paths(tree)
    finally:
        if was_enabled:
            gc.enable()


def _all_audit_paths(tree: MerkleTree) -> list[tuple[tuple[Side, bytes], ...]]:
    paths: list[tuple[tuple[Side, bytes], ...]] = [()]
    for level in reversed(tree.levels[:-1]):
        n = len(level)
        steps: list[tuple[Side, bytes] | None] = [None] * n
        right: list[tuple[Side, bytes] | None] = [(Side.RIGHT, h) for h in level[1::2]]
        if n & 1:
            right.append(None)  # the last node is promoted: no step at this level
        steps[0::2] = right
        steps[1::2] = [(Side.LEFT, h) for h in level[0 : n - 1 : 2]]
        parents = list(chain.from_iterable(zip(paths, paths, strict=True)))  # each parent's two children
        paths = [(s, *p) if s is not None else p for s, p in zip(steps, parents, strict=False)]
    return paths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf hash and its RFC 9162 audit path.

    Sides come from ``index`` and ``size`` alone, never from the caller.
    """
    shape = [side for side in path_shape(index, size) if side is not None]
    if len(shape) != len(path):
        raise ValueError(f"audit path has {len(path)} hashes, a tree of {size} needs {len(shape)}")
    node = leaf
    for side, sibling in zip(shape, path, strict=True):
        node = hashlib.sha256(b"\x01" + (sibling + node if side is Side.LEFT else node + sibling)).digest()
    return node
