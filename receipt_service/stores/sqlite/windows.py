"""A lane's windows in the store file: the backlog after the watermark, committed windows and their trees,
subject heads, anchor jobs and anchors, and the Fabric blocks kept as evidence."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence

from receipt_verifier.logs import frontier_root

from ...errors import CorruptRecordError, StoreError
from ..base import (
    AnchorRecord,
    StoredBatch,
    SubjectHead,
    TreeRecord,
    insertion_order,
    tree_checksum,
)
from .connections import Connections
from .schema import (
    BATCHES_FROM,
    KEEP_CHANGES,
    MAX_SEQ,
    batch_from_row,
    tree_from_row,
)


class WindowRecords(Connections):
    """The window part of ``SQLiteStore``."""

    async def backlog(self, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to about ``limit`` submissions after the aggregation watermark (up to seq ``upto``), as
        consecutive batches."""

        def read() -> list[StoredBatch]:
            out: list[StoredBatch] = []
            with self._bulk_lock:
                self._bulk.execute("BEGIN")
                try:
                    mark = int(self._bulk.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()[0])
                    cur = self._bulk.execute(BATCHES_FROM, (mark + 1, MAX_SEQ))
                    taken = 0
                    for row in cur:
                        stored = batch_from_row(row)
                        if stored.last_seq <= mark:
                            continue
                        if upto is not None and stored.first_seq > upto:
                            break
                        stored = stored.between(mark + 1, stored.last_seq)
                        expected = out[-1].last_seq + 1 if out else mark + 1
                        if stored.first_seq != expected:
                            raise CorruptRecordError(
                                f"submissions after #{expected - 1} are not consecutive; the store is damaged"
                            )
                        out.append(stored)
                        taken += stored.batch.count
                        if taken >= limit:
                            break
                finally:
                    self._bulk.execute("COMMIT")
            return out

        return await self._bulk_read(read)

    async def commit_window(
        self,
        trees: Sequence[TreeRecord],
        targets: Sequence[str],
        heads: Sequence[SubjectHead] = (),
        *,
        term: int | None = None,
    ) -> None:
        """Record a window's trees, one open anchor job per tree and target, the new heads of the subject
        logs it changed, and move the watermark (the lead of a process, or of a worker holding the
        leader lock, has one term: ``term`` has nothing to check)."""
        if not trees:
            return
        now = time.time_ns()
        first, last = trees[0].first_seq, trees[-1].last_seq

        def write(conn: sqlite3.Connection) -> None:
            mark = int(conn.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()[0])
            if first != mark + 1:
                raise StoreError(f"window starts at #{first} but the watermark is #{mark}; another aggregator ran")
            conn.executemany(
                "INSERT INTO trees(window_id, tree_index, first_seq, last_seq, root, window_start,"
                " window_end, closed_ns, checksum, heads_root, heads_size) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        t.window_id,
                        t.tree_index,
                        t.first_seq,
                        t.last_seq,
                        t.root,
                        t.window_start,
                        t.window_end,
                        now,
                        tree_checksum(t),
                        t.heads_root,
                        t.heads_size,
                    )
                    for t in trees
                ],
            )
            conn.executemany(
                "INSERT INTO subject_heads(subject, upto, size, root, frontier) VALUES (?,?,?,?,?)",
                [(h.subject, last, h.size, h.root, b"".join(h.frontier)) for h in heads],
            )
            conn.executemany(
                "INSERT INTO anchors(window_id, tree_index, target, created_ns) VALUES (?,?,?,?)",
                [(t.window_id, t.tree_index, target, now) for t in trees for target in targets],
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'watermark'", (str(last),))
            self._note_change(conn, first, last)

        await self._write(write)

    async def tree_for_seq(self, seq: int) -> TreeRecord | None:
        """The tree holding submission ``seq``, or None while it is still pending."""
        rows = self._read(
            "SELECT window_id, tree_index, first_seq, last_seq, root, window_start, window_end, checksum, heads_root,"
            " heads_size FROM trees WHERE first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
            (seq,),
        )
        if not rows:
            return None
        tree = tree_from_row(rows[0])
        return tree if tree.last_seq >= seq else None

    async def subject_heads(self, upto: int | None = None) -> dict[str, tuple[int, bytes]]:
        """Every subject log's head (size, root) as of the window that ended at seq ``upto`` (None: now),
        in the heads tree's insertion order."""
        rows = self._read(
            "SELECT subject, size, root, (SELECT min(upto) FROM subject_heads WHERE subject = h.subject)"
            " FROM subject_heads h WHERE upto = (SELECT max(upto) FROM subject_heads"
            " WHERE subject = h.subject AND upto <= ?)",
            (MAX_SEQ if upto is None else upto,),
        )
        return insertion_order((subject, size, bytes(root), since) for subject, size, root, since in rows)

    async def subject_frontier(self, subject: str, upto: int | None = None) -> SubjectHead | None:
        """A subject log's head with its compact range as of the window that ended at seq ``upto`` (None:
        the newest; None is also the answer when no window holds the log yet)."""
        rows = self._read(
            "SELECT size, root, frontier FROM subject_heads WHERE subject = ? AND upto <= ? ORDER BY upto DESC LIMIT 1",
            (subject, MAX_SEQ if upto is None else upto),
        )
        if not rows:
            return None
        size, root, frontier = rows[0]
        nodes = tuple(bytes(frontier[i : i + 32]) for i in range(0, len(frontier), 32))
        head = SubjectHead(subject, size, bytes(root), nodes)
        if len(nodes) != int(size).bit_count() or frontier_root(nodes) != head.root:
            raise CorruptRecordError(f"the stored head of {subject}'s log fails its check")
        return head

    async def anchored_windows(self, before: str) -> list[TreeRecord]:
        """Trees with heads whose window ended at or before ``before`` (RFC 3339), newest first."""
        rows = self._read(
            "SELECT window_id, tree_index, first_seq, last_seq, root, window_start, window_end, checksum, heads_root,"
            " heads_size FROM trees WHERE heads_root IS NOT NULL AND window_end <= ?"
            " ORDER BY last_seq DESC, tree_index LIMIT 64",
            (before,),
        )
        return [tree_from_row(r) for r in rows]

    async def tree_batches(self, tree: TreeRecord) -> list[StoredBatch]:
        """The submissions of a tree, as consecutive batches clipped to its seq range."""

        def read() -> list[StoredBatch]:
            with self._bulk_lock:
                rows = self._bulk.execute(BATCHES_FROM, (tree.first_seq, tree.last_seq)).fetchall()
            spans = [batch_from_row(r).between(tree.first_seq, tree.last_seq) for r in rows]
            if not spans or spans[0].first_seq != tree.first_seq or sum(s.batch.count for s in spans) != tree.size:
                raise CorruptRecordError(f"tree {tree.window_id}/{tree.tree_index}: its submissions are missing")
            return spans

        return await self._bulk_read(read)

    async def anchors_for(self, tree: TreeRecord) -> list[AnchorRecord]:
        """Every anchor job of a tree, done or open."""
        rows = self._read(
            "SELECT window_id, tree_index, target, anchor, attempts, last_error, created_ns, done_ns FROM anchors"
            " WHERE window_id = ? AND tree_index = ? ORDER BY target",
            (tree.window_id, tree.tree_index),
        )
        return [AnchorRecord(*r) for r in rows]

    async def open_anchor_jobs(self) -> list[tuple[TreeRecord, str]]:
        """(tree, target) pairs not anchored yet, oldest first: work left over from a crash."""
        rows = self._read(
            "SELECT t.window_id, t.tree_index, t.first_seq, t.last_seq, t.root, t.window_start, t.window_end,"
            " t.checksum, t.heads_root, t.heads_size, a.target FROM anchors a"
            " JOIN trees t USING (window_id, tree_index) WHERE a.anchor IS NULL ORDER BY t.first_seq",
            (),
        )
        return [(tree_from_row(r[:-1]), r[-1]) for r in rows]

    async def record_anchor(self, tree: TreeRecord, target: str, anchor_json: str, done_ns: int) -> None:
        """Store a finished anchor."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE anchors SET anchor = ?, done_ns = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE window_id = ? AND tree_index = ? AND target = ?",
                (anchor_json, done_ns, tree.window_id, tree.tree_index, target),
            )
            self._note_change(conn, tree.first_seq, tree.last_seq)

        await self._write(write)

    async def record_anchor_failure(self, tree: TreeRecord, target: str, error: str) -> None:
        """Count a failed attempt (the job stays open and is retried)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE anchors SET attempts = attempts + 1, last_error = ?"
                " WHERE window_id = ? AND tree_index = ? AND target = ?",
                (error[:1000], tree.window_id, tree.tree_index, target),
            )

        await self._write(write)

    def _note_change(self, conn: sqlite3.Connection, first: int, last: int) -> None:
        """Tell the other workers (their ``watch``) that submissions ``first..last`` changed state."""
        if self.worker is None:
            return
        n = conn.execute("INSERT INTO changes(first_seq, last_seq) VALUES (?, ?)", (first, last)).lastrowid
        if n is not None and n % 1000 == 0:
            conn.execute("DELETE FROM changes WHERE n <= ?", (n - KEEP_CHANGES,))

    async def put_fabric_block(self, channel: str, number: int, block: bytes) -> None:
        """Keep a Fabric block (evidence for anchors); a block already kept stays as it is."""
        checksum = hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO fabric_blocks (channel, number, block, checksum) VALUES (?, ?, ?, ?)",
                (channel, number, block, checksum),
            )

        await self._write(write)

    async def get_fabric_block(self, channel: str, number: int) -> bytes | None:
        """A kept Fabric block, checked against its checksum, or None."""
        rows = self._read(
            "SELECT block, checksum FROM fabric_blocks WHERE channel = ? AND number = ?", (channel, number)
        )
        if not rows:
            return None
        block, checksum = rows[0]
        if hashlib.blake2b(block, digest_size=16, person=b"fabric-block").digest() != checksum:
            raise CorruptRecordError(f"stored Fabric block {number} of {channel} fails its checksum")
        return bytes(block)
