"""The embedded store: one SQLite file per lane in WAL mode, with full sync and group commit.

- ``schema``: the tables, how a connection is opened and an older file migrated, rows read back into
  records (each checked against its checksum).
- ``writer``: one thread owns the write connection; requests queue their writes and the thread commits
  everything queued in one transaction, so concurrent requests share one fsync, and checkpoints the
  WAL between transactions.
- ``connections``: the file's connections. Small reads run on the caller's thread over a separate read
  connection (WAL readers never block the writer); bulk reads (a window's backlog, the submissions of
  a tree) run in a worker thread; writes go to the writer.
- ``store``: ``SQLiteStore``, the ``Store`` seam over one file: opening it, submissions, the lead,
  retention and health, with ``windows`` (the backlog, windows, trees, subject heads, anchors and
  Fabric blocks) and ``access`` (subjects, signing keys, access events, API keys) as its parts.

Submissions get consecutive ``seq`` numbers from the writer; a window is a ``seq`` range,
so closing one writes a few tree rows and moves a watermark, never touching submission rows.

The worker processes of ``serve --workers`` share the files (``worker`` set): each issues proof ids
on its own clock sequence, write transactions take turns under a ``WriterLock`` and read the next
seq and the receive-time floor from the file, the lead is a ``LeaderLock``, and commits and anchors
are noted in ``changes``, which the other workers poll to wake their long polls.
"""

from .schema import DB_FILE, KEEP_CHANGES, MAX_SEQ
from .store import SQLiteStore, open_domain_stores, sqlite_heap_bytes

__all__ = ["DB_FILE", "KEEP_CHANGES", "MAX_SEQ", "SQLiteStore", "open_domain_stores", "sqlite_heap_bytes"]
