"""RFC 6962 / RFC 9162 Merkle trees over a closed list of leaves (pure, hashlib only).

Odd nodes are promoted to the next level, never duplicated, which yields exactly the
RFC 6962 tree (split at the largest power of two below n).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import re
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


_LOW_SIDES = ["".join("l" if i >> level & 1 else "r" for level in range(6)) for i in range(64)]


def path_sides(index: int, size: int) -> str:
    """``sibling_kinds`` as one string, faster: below level 6 a leaf of a whole 64-leaf block has every
    sibling, its side read from the index's bits; the levels above are cached per block."""
    if index | 63 < size:
        return _LOW_SIDES[index & 63] + _upper_sides(index >> 6, (size + 63) >> 6)
    return "".join(sibling_kinds(index, size))


@functools.lru_cache(maxsize=4096)
def _upper_sides(block: int, blocks: int) -> str:
    return "".join(sibling_kinds(block, blocks))


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


_LOWER_HEX = re.compile(r"[0-9a-f]*")


def climb_hex(node: bytes, sides: Sequence[str], siblings: Sequence[str]) -> bytes | None:
    """The root reached from ``node`` with these siblings (64 lowercase hex characters each) on these
    sides (``l``: the sibling is on the left); None unless every sibling is lowercase hex and each side
    has one. The siblings are checked and decoded at once, the one-pass walks' hot loop."""
    joined = "".join(siblings)
    if len(sides) != len(siblings) or len(joined) != 64 * len(siblings) or _LOWER_HEX.fullmatch(joined) is None:
        return None
    raw = bytes.fromhex(joined)
    sha = hashlib.sha256
    j = 0
    for side in sides:
        sibling = raw[j : j + 32]
        node = sha(b"\x01" + sibling + node if side == "l" else b"\x01" + node + sibling).digest()
        j += 32
    return node


def _range_root(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    return MerkleTree.from_leaf_hashes(leaf_hashes[lo:hi]).root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1: the proof that the tree of the first ``old_size`` leaves is a prefix of them all."""
    n = len(leaf_hashes)
    if not 1 <= old_size <= n:
        raise ValueError(f"a consistency proof from size {old_size} needs 1 <= {old_size} <= {n}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete), unrolled: hashes are collected leaf-side first
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m <= k:
            proof.append(_range_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_range_root(leaf_hashes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(_range_root(leaf_hashes, lo, hi))
    proof.reverse()
    return proof


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ``ValueError`` (with the reason) unless ``proof`` takes the old root to the new."""
    if old_size < 1 or new_size < old_size:
        raise ValueError(f"no consistency proof goes from size {old_size} to size {new_size}")
    if old_size == new_size:
        if proof:
            raise ValueError("equal sizes need an empty consistency proof")
        if old_root != new_root:
            raise ValueError("equal sizes but different roots")
        return
    path = list(proof)
    if not path:
        raise ValueError("the consistency proof is empty")
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ValueError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hashlib.sha256(b"\x01" + c + fr).digest()
            sr = hashlib.sha256(b"\x01" + c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hashlib.sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the consistency proof is too short")
    if fr != old_root:
        raise ValueError("the consistency proof does not lead to the old root")
    if sr != new_root:
        raise ValueError("the consistency proof does not lead to the new root")
