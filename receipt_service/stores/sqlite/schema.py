"""The embedded store's file: its tables, how a connection is opened, older files migrated, and rows
read back into records (each checked against its checksum)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ...errors import CorruptRecordError
from ..base import (
    ApiKeyRecord,
    Batch,
    EventRecord,
    StoredBatch,
    TreeRecord,
    batch_checksum,
    seq_hashes,
    tree_checksum,
)

DB_FILE = "receipts.sqlite3"
SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
  first_seq INTEGER PRIMARY KEY,
  count INTEGER NOT NULL,
  first_ticks INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  proof_ids BLOB NOT NULL,
  hashes BLOB NOT NULL,
  nonces BLOB NOT NULL,
  checksum BLOB NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  log_first INTEGER NOT NULL DEFAULT 0,
  clock INTEGER NOT NULL DEFAULT -1  -- the clock sequence of the proof ids (-1: the file's own, meta clock_seq)
);
CREATE TABLE IF NOT EXISTS subject_logs (subject TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subject_hashes (
  subject TEXT NOT NULL,
  hash BLOB NOT NULL,
  last_seq INTEGER NOT NULL DEFAULT 0,  -- the newest submission of the hash for the subject (retention)
  PRIMARY KEY (subject, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subjects (subject TEXT PRIMARY KEY, tenant TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signing_keys (
  key_id TEXT PRIMARY KEY,
  party TEXT NOT NULL,
  tenant TEXT NOT NULL,
  jwk TEXT NOT NULL,
  created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS access_events (
  n INTEGER PRIMARY KEY AUTOINCREMENT,
  replay_id TEXT NOT NULL UNIQUE,
  event_hash TEXT NOT NULL,
  owner TEXT NOT NULL,
  receiver TEXT NOT NULL,
  domain TEXT NOT NULL,
  action TEXT NOT NULL,
  time TEXT NOT NULL,
  expiry TEXT,
  doc TEXT NOT NULL,
  proof_id TEXT NOT NULL,
  tenant TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_events_owner ON access_events(owner, receiver, domain);
CREATE UNIQUE INDEX IF NOT EXISTS batches_clock_ticks ON batches(clock, first_ticks);
CREATE INDEX IF NOT EXISTS batches_subject ON batches(subject, first_seq) WHERE subject != '';
CREATE TABLE IF NOT EXISTS trees (
  window_id TEXT NOT NULL,
  tree_index INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  root BLOB NOT NULL,
  window_start TEXT NOT NULL,
  window_end TEXT NOT NULL,
  closed_ns INTEGER NOT NULL,
  checksum BLOB NOT NULL,
  heads_root BLOB,
  heads_size INTEGER,
  PRIMARY KEY (window_id, tree_index)
);
CREATE TABLE IF NOT EXISTS subject_heads (
  subject TEXT NOT NULL,
  upto INTEGER NOT NULL,
  size INTEGER NOT NULL,
  root BLOB NOT NULL,
  frontier BLOB NOT NULL,
  PRIMARY KEY (subject, upto)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS trees_first_seq ON trees(first_seq);
CREATE TABLE IF NOT EXISTS anchors (
  window_id TEXT NOT NULL,
  tree_index INTEGER NOT NULL,
  target TEXT NOT NULL,
  anchor TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  created_ns INTEGER NOT NULL,
  done_ns INTEGER,
  PRIMARY KEY (window_id, tree_index, target)
);
CREATE INDEX IF NOT EXISTS anchors_open ON anchors(window_id, tree_index) WHERE anchor IS NULL;
CREATE TABLE IF NOT EXISTS fabric_blocks (
  channel TEXT NOT NULL,
  number INTEGER NOT NULL,
  block BLOB NOT NULL,
  checksum BLOB NOT NULL,
  PRIMARY KEY (channel, number)
);
CREATE TABLE IF NOT EXISTS changes (  -- commits and anchors, for the other workers' long polls
  n INTEGER PRIMARY KEY AUTOINCREMENT,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  secret_hash BLOB NOT NULL,
  scopes TEXT NOT NULL,
  created TEXT NOT NULL,
  revoked TEXT,
  role TEXT
);
"""

# Column lists are spelled out in each statement: every SQL string here is a literal.
BATCHES_FROM = (  # the batches from the one holding seq ?1 on, up to seq ?2
    "SELECT first_seq, count, first_ticks, tenant, proof_ids, hashes, nonces, checksum, subject, log_first"
    " FROM batches WHERE first_seq >= (SELECT coalesce(max(first_seq), 0) FROM batches WHERE first_seq <= ?1)"
    " AND first_seq <= ?2 ORDER BY first_seq"
)
MAX_SEQ = 2**63 - 1
KEEP_CHANGES = 10_000  # rows of ``changes`` kept (a worker polls them every few tens of milliseconds)
_WAL_LIMIT = 64 << 20  # bytes of WAL file kept when it starts again (it shrinks back after a burst)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    if not readonly:
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older release up to this schema (columns added with defaults)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    if cols and "subject" not in cols:
        conn.execute("ALTER TABLE batches ADD COLUMN subject TEXT NOT NULL DEFAULT ''")
        conn.execute("ALTER TABLE batches ADD COLUMN log_first INTEGER NOT NULL DEFAULT 0")
    if cols and "clock" not in cols:  # a receive time is unique per clock sequence, no longer per file
        conn.execute("ALTER TABLE batches ADD COLUMN clock INTEGER NOT NULL DEFAULT -1")
    conn.execute("DROP INDEX IF EXISTS batches_ticks")
    cols = {r[1] for r in conn.execute("PRAGMA table_info(trees)")}
    if cols and "heads_root" not in cols:
        conn.execute("ALTER TABLE trees ADD COLUMN heads_root BLOB")
        conn.execute("ALTER TABLE trees ADD COLUMN heads_size INTEGER")
    cols = {r[1] for r in conn.execute("PRAGMA table_info(api_keys)")}
    if cols and "role" not in cols:
        conn.execute("ALTER TABLE api_keys ADD COLUMN role TEXT")
    cols = {r[1] for r in conn.execute("PRAGMA table_info(subject_hashes)")}
    if cols and "last_seq" not in cols:  # each hash's newest submission, from the batches; purged ones go
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ALTER TABLE subject_hashes ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0")
        rows = conn.execute("SELECT first_seq, subject, hashes FROM batches WHERE subject != '' ORDER BY first_seq")
        for first, subject, hashes in rows.fetchall():
            conn.executemany(
                "UPDATE subject_hashes SET last_seq = ? WHERE subject = ? AND hash = ?",
                [(seq, subject, h) for seq, h in seq_hashes(first, hashes)],
            )
        purged = conn.execute("SELECT value FROM meta WHERE key = 'purged_upto'").fetchone()
        conn.execute("DELETE FROM subject_hashes WHERE last_seq <= ?", (int(purged[0]) if purged else 0,))
        conn.execute("COMMIT")


def batch_from_row(row: tuple[Any, ...]) -> StoredBatch:
    first_seq, count, first_ticks, tenant, proof_ids, hashes, nonces, checksum, subject, log_first = row
    try:
        stored = StoredBatch(first_seq, Batch(tenant, first_ticks, proof_ids, hashes, nonces, subject, log_first))
        ok = stored.batch.count == count and checksum == batch_checksum(first_seq, stored.batch)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise CorruptRecordError(f"submissions #{first_seq}.. failed their integrity check; they are not served")
    return stored


def tree_from_row(row: tuple[Any, ...]) -> TreeRecord:
    window_id, tree_index, first_seq, last_seq, root, start, end, checksum, heads_root, heads_size = row
    tree = TreeRecord(window_id, tree_index, first_seq, last_seq, root, start, end, heads_root, heads_size)
    if not isinstance(root, bytes) or len(root) != 32 or checksum != tree_checksum(tree):
        raise CorruptRecordError(f"tree {window_id}/{tree_index} failed its integrity check; it is not served")
    return tree


def key_from_row(row: tuple[Any, ...]) -> ApiKeyRecord:
    key_id, tenant, secret_hash, scopes, created, revoked, role = row
    return ApiKeyRecord(
        key_id, tenant, secret_hash, frozenset(s for s in scopes.split(",") if s), created, revoked, role
    )


def event_from_row(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(*row)
