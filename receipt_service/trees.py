"""Window trees in packed form, built off the event loop's interpreter for large windows.

Building a 100k-leaf tree means ~300k small SHA-256 calls, which hold the GIL: in a thread
they would stall request handling for a large part of a second. Large windows are therefore
built in a worker process, which returns each level as one ``bytes`` object (cheap to send
and to keep). Small windows are built in a thread, where a process hop would cost more.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from receipt_verifier.hashing import bound_commitment, salted_commitment
from receipt_verifier.merkle import MerkleTree, Side

#: Windows with at least this many leaves are built in the worker process.
PROCESS_THRESHOLD = 8192

Columns = tuple[
    bytes, bytes, bytes, bytes
]  # proof ids (16 B each), hashes (32 B), nonces (16 B), bindings (32 B or none)


@dataclass(frozen=True)
class PackedTree:
    """An RFC 6962 tree: ``levels[0]`` holds the leaf hashes, 32 bytes each, ``levels[-1]`` the root."""

    levels: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0]) // 32

    @property
    def root(self) -> bytes:
        """The tree head."""
        return self.levels[-1]

    def leaf(self, index: int) -> bytes:
        """The leaf hash H(0x00 || commitment) at ``index``."""
        return self.levels[0][32 * index : 32 * index + 32]

    def audit_path(self, index: int) -> list[tuple[Side, bytes]]:
        """Siblings from leaf to root with their sides (promoted levels have none)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of {self.size} leaves")
        path: list[tuple[Side, bytes]] = []
        for level in self.levels[:-1]:
            n = len(level) // 32
            if index & 1:
                path.append((Side.LEFT, level[32 * (index - 1) : 32 * index]))
            elif index + 1 < n:
                path.append((Side.RIGHT, level[32 * (index + 1) : 32 * (index + 2)]))
            index >>= 1
        return path


def commitments(columns: Columns) -> list[bytes]:
    """H(nonce || proof_id || hash [|| binding]) for every item of one packed batch."""
    pids, hashes, nonces, bindings = columns
    if bindings:
        return [
            bound_commitment(
                nonces[16 * i : 16 * i + 16],
                pids[16 * i : 16 * i + 16],
                hashes[32 * i : 32 * i + 32],
                bindings[32 * i : 32 * i + 32],
            )
            for i in range(len(hashes) // 32)
        ]
    return [
        salted_commitment(nonces[16 * i : 16 * i + 16], pids[16 * i : 16 * i + 16], hashes[32 * i : 32 * i + 32])
        for i in range(len(hashes) // 32)
    ]


def pack_tree(leaf_values: Sequence[bytes]) -> PackedTree:
    """The verifier's RFC 6962 tree over these leaf values, each level packed into one ``bytes``."""
    return PackedTree(tuple(b"".join(level) for level in MerkleTree.from_commitments(leaf_values).levels))


def build_packed(batches: Sequence[Columns], max_leaves: int) -> list[PackedTree]:
    """Pure: consecutive batches -> trees of at most ``max_leaves`` leaves (runs in the worker process)."""
    values = [c for cols in batches for c in commitments(cols)]
    return [pack_tree(values[lo : lo + max_leaves]) for lo in range(0, len(values), max_leaves)]


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave when the service dies (even by kill -9) instead of lingering."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class TreeBuilder:
    """Builds window trees in a thread (small) or a single worker process (large)."""

    def __init__(self, threshold: int = PROCESS_THRESHOLD) -> None:
        self.threshold = threshold
        self._pool: ProcessPoolExecutor | None = None

    async def build(self, batches: Sequence[Columns], max_leaves: int) -> list[PackedTree]:
        """Trees for these batches, in order."""
        total = sum(len(c[1]) // 32 for c in batches)
        if total < self.threshold:
            return await asyncio.to_thread(build_packed, batches, max_leaves)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, build_packed, list(batches), max_leaves)

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class TreeCache:
    """Recently built or loaded trees, so receipts do not rebuild them."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], PackedTree] = OrderedDict()

    def get(self, key: tuple[str, int]) -> PackedTree | None:
        """A cached tree (marked recently used)."""
        tree = self._items.get(key)
        if tree is not None:
            self._items.move_to_end(key)
        return tree

    def put(self, key: tuple[str, int], tree: PackedTree) -> None:
        """Cache a tree, evicting the least recently used."""
        self._items[key] = tree
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
