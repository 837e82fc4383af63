"""Who may do what, on the shared store: subjects and the apps that own them, signing keys, access events,
and API keys (held by the first lane's store)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...errors import ConflictError, CorruptRecordError, StoreError
from ..base import (
    ApiKeyRecord,
    EventRecord,
    SigningKeyRecord,
)
from .keys import LaneKeys
from .link import ScriptRefusedError, redis_errors
from .records import EVENT_FIELDS, api_key_from_doc, key_doc


class AccessRecords(LaneKeys):
    """The access part of ``RedisStore``."""

    async def _add_key(self, subject: str, tenant: str, subject_doc: str, key: SigningKeyRecord) -> None:
        keys = [self.k("subjects"), self.k("signing-keys")]
        doc = json.dumps(
            {"key_id": key.key_id, "party": key.party, "tenant": key.tenant, "jwk": key.jwk, "created": key.created}
        )
        try:
            await self.link.run("add_key", keys, [subject, tenant, subject_doc, key.key_id, key.party, doc])
        except ScriptRefusedError as exc:
            if exc.reply.startswith("CONFLICT "):
                raise ConflictError(exc.reply[9:]) from None
            raise

    async def register_subject(self, subject: str, tenant: str, key: SigningKeyRecord) -> None:
        """Record that ``tenant``'s app owns ``subject``, with the owner's key (ConflictError: another tenant's)."""
        await self._add_key(subject, tenant, json.dumps({"tenant": tenant, "created": key.created}), key)

    async def subject_tenant(self, subject: str) -> str | None:
        """The tenant whose app registered ``subject``, or None."""
        doc = await self._call("hget", self.k("subjects"), subject)
        return None if doc is None else str(json.loads(doc)["tenant"])

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Register a receiving party's key (the same key again is a no-op)."""
        await self._add_key("", "", "", key)

    async def get_signing_key(self, key_id: str) -> SigningKeyRecord | None:
        """A registered key by thumbprint."""
        doc = await self._call("hget", self.k("signing-keys"), key_id)
        if doc is None:
            return None
        d = json.loads(doc)
        return SigningKeyRecord(d["key_id"], d["party"], d["tenant"], d["jwk"], d["created"])

    async def seen_event(self, replay_id: str) -> bool:
        """Whether an event with these signed bytes was accepted before."""
        return bool(await self._call("hexists", self.k("replays"), replay_id))

    async def add_event(self, event: EventRecord) -> bool:
        """Keep an accepted event; False when its replay id is already there."""
        doc = json.dumps({f: getattr(event, f) for f in EVENT_FIELDS})
        decision = (
            f"{event.owner}\0{event.receiver}\0{event.domain}" if event.action in ("grant", "deny", "revoke") else ""
        )
        keys = [self.k("replays"), self.k("events"), self.k("meta"), self.k(f"ev:{event.owner}"), self.k("decisions")]
        return bool(await self.link.run("add_event", keys, [event.replay_id, doc, decision], wait=True))

    async def _events(self, ns: Sequence[bytes | int]) -> list[EventRecord]:
        if not ns:
            return []
        docs = await self._call("hmget", self.k("events"), list(ns))
        out = []
        for n, doc in zip(ns, docs, strict=True):
            if doc is None:
                raise CorruptRecordError(f"access event {n!r} is indexed but missing")
            d = json.loads(doc)
            fields: dict[str, Any] = {f: d[f] for f in EVENT_FIELDS}
            out.append(EventRecord(**fields, n=int(n)))
        return out

    async def events(self, owner: str) -> list[EventRecord]:
        """Every access event of a subject, in acceptance order."""
        return await self._events(await self._call("lrange", self.k(f"ev:{owner}"), 0, -1))

    async def last_decision(self, owner: str, receiver: str, domain: str) -> EventRecord | None:
        """The owner's latest grant, deny or revoke for this receiver and domain."""
        n = await self._call("hget", self.k("decisions"), f"{owner}\0{receiver}\0{domain}")
        return None if n is None else (await self._events([n]))[0]

    # ------------------------------------------------------------------ API keys

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not."""
        doc = await self._call("hget", self.k("api-keys"), key_id)
        return None if doc is None else api_key_from_doc(doc)

    def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key (administrative, synchronous)."""
        with redis_errors():
            if not self.link.sync.hsetnx(self.k("api-keys"), key.key_id, key_doc(key)):
                raise StoreError(f"an API key with id {key.key_id} exists already")

    def revoke_api_key(self, key_id: str, when: str) -> bool:
        """Mark a key revoked; False when there is no such active key."""
        with redis_errors():
            return bool(self.link.sync_scripts["revoke"](keys=[self.k("api-keys")], args=[key_id, when]))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        with redis_errors():
            docs = self.link.sync.hvals(self.k("api-keys"))
        return sorted((api_key_from_doc(d) for d in docs), key=lambda k: (k.created, k.key_id))
