"""Tenant API keys: ``hrk_<key id>_<secret>``; only SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .domains import Role, parse_role
from .errors import ClientError, ForbiddenError, UnauthorizedError
from .stores.base import ApiKeyRecord, Store

SCOPES = frozenset({"submit", "read"})
_KEY_RE = re.compile(r"^hrk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_TENANT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant that owns what it submits, and what it may do."""

    tenant: str
    key_id: str
    scopes: frozenset[str]
    role: Role | None = None  # None: a key from before roles (anonymous v1 hashes, no domain)


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: ``token`` is shown once, ``record`` is what gets stored."""

    token: str
    record: ApiKeyRecord


def parse_scopes(text: str) -> frozenset[str]:
    """``submit,read`` -> scopes; unknown names are an error."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise ClientError(f"scopes must be a comma-separated subset of {', '.join(sorted(SCOPES))}; got {text!r}")
    return scopes


def make_key(tenant: str, scopes: frozenset[str], role: Role | None = None) -> NewKey:
    """A new random key for ``tenant`` (256-bit secret, so a plain SHA-256 is a safe stored form)."""
    if not _TENANT_RE.fullmatch(tenant):
        raise ClientError(f"tenant name {tenant!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    if role == "auditor" and "submit" in scopes:
        raise ClientError("an auditor key is read-only: give it the 'read' scope only")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = ApiKeyRecord(key_id, tenant, hashlib.sha256(secret.encode()).digest(), scopes, created, None, role)
    return NewKey(f"hrk_{key_id}_{secret}", record)


class Authenticator:
    """Checks keys against the store, caching lookups briefly (revocation takes effect within ``ttl``)."""

    def __init__(self, store: Store, ttl: float = 2.0) -> None:
        self._store = store
        self._ttl = ttl
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def authenticate(self, header: str | None, scope: str) -> Principal:
        """The principal behind an ``Authorization: Bearer`` or ``X-API-Key`` value."""
        if not header:
            raise UnauthorizedError("missing API key: send 'Authorization: Bearer hrk_...' or 'X-API-Key: hrk_...'")
        token = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
        m = _KEY_RE.fullmatch(token)
        if m is None:
            raise UnauthorizedError("malformed API key: expected hrk_<16 hex>_<43 characters>")
        key_id, secret = m.groups()
        hit = self._cache.get(key_id)  # a fresh hit needs no await (the hot path)
        record = hit[1] if hit is not None and time.monotonic() - hit[0] < self._ttl else await self._fetch(key_id)
        if record is None or not hmac.compare_digest(record.secret_hash, hashlib.sha256(secret.encode()).digest()):
            raise UnauthorizedError("unknown API key")
        if record.revoked is not None:
            raise UnauthorizedError(f"API key {key_id} was revoked at {record.revoked}")
        if scope == "submit" and record.role == "auditor":
            raise ForbiddenError(f"Table I: API key {key_id} is an auditor's, which is read-only and adds nothing")
        if scope not in record.scopes:
            raise ForbiddenError(
                f"API key {key_id} lacks the '{scope}' scope (it has: {', '.join(sorted(record.scopes))})"
            )
        return Principal(record.tenant, key_id, record.scopes, parse_role(record.role) if record.role else None)

    async def _fetch(self, key_id: str) -> ApiKeyRecord | None:
        """The key from the store, cached for ``ttl`` (the caller found no fresh entry)."""
        now = time.monotonic()
        record = await self._store.get_api_key(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, record)
        return record
