"""Who may do what, in the store file: subjects and the apps that own them, signing keys, access events,
and API keys."""

from __future__ import annotations

import sqlite3

from ...errors import ConflictError
from ..base import ApiKeyRecord, EventRecord, SigningKeyRecord
from .connections import Connections
from .schema import event_from_row, key_from_row


class AccessRecords(Connections):
    """The access part of ``SQLiteStore``."""

    async def register_subject(self, subject: str, tenant: str, key: SigningKeyRecord) -> None:
        """Record that ``tenant``'s app owns ``subject``, with the owner's key (ConflictError: another tenant's)."""

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT tenant FROM subjects WHERE subject = ?", (subject,)).fetchone()
            if row is not None and row[0] != tenant:
                raise ConflictError(f"subject {subject} is registered by another app; choose another pseudonym")
            conn.execute(
                "INSERT OR IGNORE INTO subjects(subject, tenant, created) VALUES (?,?,?)",
                (subject, tenant, key.created),
            )
            _insert_key(conn, key)

        await self._write(write)

    async def subject_tenant(self, subject: str) -> str | None:
        """The tenant whose app registered ``subject``, or None."""
        rows = self._read("SELECT tenant FROM subjects WHERE subject = ?", (subject,))
        return str(rows[0][0]) if rows else None

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Register a receiving party's key (the same key again is a no-op)."""
        await self._write(lambda conn: _insert_key(conn, key))

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        """A registered key by thumbprint."""
        rows = self._read("SELECT key_id, party, tenant, jwk, created FROM signing_keys WHERE key_id = ?", (key_id,))
        return SigningKeyRecord(*rows[0]) if rows else None

    async def seen_event(self, replay_id: str) -> bool:
        """Whether an event with these signed bytes was accepted before."""
        return bool(self._read("SELECT 1 FROM access_events WHERE replay_id = ?", (replay_id,)))

    async def add_event(self, event: EventRecord) -> bool:
        """Keep an accepted event; False when its replay id is already there (a replay)."""

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO access_events(replay_id, event_hash, owner, receiver, domain, action, time,"
                " expiry, doc, proof_id, tenant) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    event.replay_id,
                    event.event_hash,
                    event.owner,
                    event.receiver,
                    event.domain,
                    event.action,
                    event.time,
                    event.expiry,
                    event.doc,
                    event.proof_id,
                    event.tenant,
                ),
            )
            return cur.rowcount == 1

        return await self._write(write)

    async def events(self, owner: str) -> list[EventRecord]:
        """Every access event of a subject, in acceptance order."""
        rows = self._read(
            "SELECT replay_id, event_hash, owner, receiver, domain, action, time, expiry, doc, proof_id, tenant, n"
            " FROM access_events WHERE owner = ? ORDER BY n",
            (owner,),
        )
        return [event_from_row(r) for r in rows]

    async def last_decision(self, owner: str, receiver: str, domain: str) -> EventRecord | None:
        """The owner's latest grant, deny or revoke for this receiver and domain."""
        rows = self._read(
            "SELECT replay_id, event_hash, owner, receiver, domain, action, time, expiry, doc, proof_id, tenant, n"
            " FROM access_events WHERE owner = ? AND receiver = ? AND domain = ?"
            " AND action IN ('grant', 'deny', 'revoke') ORDER BY n DESC LIMIT 1",
            (owner, receiver, domain),
        )
        return event_from_row(rows[0]) if rows else None

    # ------------------------------------------------------------------ API keys

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not."""
        rows = self._read(
            "SELECT key_id, tenant, secret_hash, scopes, created, revoked, role FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        return key_from_row(rows[0]) if rows else None

    def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key (administrative: synchronous, from the CLI or at first start)."""
        with self._admin() as conn:
            conn.execute(
                "INSERT INTO api_keys(key_id, tenant, secret_hash, scopes, created, role) VALUES (?,?,?,?,?,?)",
                (key.key_id, key.tenant, key.secret_hash, ",".join(sorted(key.scopes)), key.created, key.role),
            )

    def revoke_api_key(self, key_id: str, when: str) -> bool:
        """Mark a key revoked; False when there is no such active key."""
        with self._admin() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (when, key_id))
            return cur.rowcount == 1

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        rows = self._read_all(
            "SELECT key_id, tenant, secret_hash, scopes, created, revoked, role FROM api_keys ORDER BY created, key_id"
        )
        return [key_from_row(r) for r in rows]


def _insert_key(conn: sqlite3.Connection, key: SigningKeyRecord) -> None:
    row = conn.execute("SELECT party FROM signing_keys WHERE key_id = ?", (key.key_id,)).fetchone()
    if row is not None and row[0] != key.party:
        raise ConflictError(f"key {key.key_id} is already registered for another party")
    conn.execute(
        "INSERT OR IGNORE INTO signing_keys(key_id, party, tenant, jwk, created) VALUES (?,?,?,?,?)",
        (key.key_id, key.party, key.tenant, key.jwk, key.created),
    )
