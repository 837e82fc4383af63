"""A typed async client for the service's HTTP API (aiohttp), for apps and for ``receipt-client``.

    async with ReceiptClient("http://127.0.0.1:8080", key) as client:
        [item] = await client.submit([hashlib.sha256(record).hexdigest()])
        receipt = await client.receipt(item.proof_id, wait="anchored")

Calls are retried with backoff on 503 (the service is draining or its store is down) and on
connection errors. A retried submission whose first attempt did reach the service gives the hash a
second receipt; both are valid. Every other error raises ``ServiceProblem`` with the server's
problem details (RFC 9457).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp

from receipt_verifier.errors import Error

MAX_HASHES = 1000  # per request (the service's default limit)
MAX_IDS = 250


class ClientError(Error):
    """A call to the receipt service failed."""


class ServiceProblem(ClientError):
    """The service answered an error; ``problem`` holds its problem details."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        detail = problem.get("detail") or problem.get("title") or "no detail"
        super().__init__(f"HTTP {status}: {detail}")


class Unreachable(ClientError):
    """The service could not be reached (after the retries)."""


@dataclass(frozen=True)
class Submitted:
    """One accepted hash."""

    proof_id: str
    hash: str
    hash_received: str


@dataclass(frozen=True)
class Batch:
    """Receipts by proof id, and the ids the service does not know (for this key's tenant)."""

    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)


class ReceiptClient:
    """One service, one API key; reuse it for many calls (it keeps a connection pool)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        retries: int = 5,
        backoff: float = 0.2,
        timeout: float = 90.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = {"Authorization": f"Bearer {key.strip()}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(self.url, headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        if self._http is None:
            raise ClientError("use the client inside 'async with ReceiptClient(...)'")
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                async with self._http.request(method, path, **kw) as resp:
                    body = await resp.read()
                    if resp.status == 503 and attempt < self.retries:
                        retry_after = resp.headers.get("Retry-After", "")
                        await asyncio.sleep(float(retry_after) if retry_after.isdigit() else delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    if resp.status >= 400:
                        raise ServiceProblem(resp.status, _problem(body, resp.status))
                    return resp.status, json.loads(body) if body else None
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise Unreachable(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def submit(
        self, hashes: Sequence[str | bytes], *, subject: str | None = None, domain: str | None = None
    ) -> list[Submitted]:
        """Submit SHA-256 hashes (hex or 32 bytes), in requests of up to 1000; one result per hash, in order.

        ``subject`` and ``domain`` place them (keys with a Table I role; the role's domain by default)."""
        out: list[Submitted] = []
        place = {k: v for k, v in (("subject", subject), ("domain", domain)) if v is not None}
        for i in range(0, len(hashes), MAX_HASHES):
            chunk = [h.hex() if isinstance(h, bytes) else h for h in hashes[i : i + MAX_HASHES]]
            _, body = await self._call("POST", "/hashes", json={"hashes": chunk, **place})
            out += [Submitted(h["proof_id"], h["hash"], h["hash_received"]) for h in body["hashes"]]
        return out

    async def receipt(
        self,
        proof_id: str,
        *,
        wait: Literal["aggregated", "anchored"] | None = None,
        timeout: float = 30.0,
        evidence: bool = False,
    ) -> dict[str, Any]:
        """A receipt (or, with ``evidence``, an evidence bundle); ``wait`` long-polls until that state."""
        params: dict[str, str] = {}
        if wait is not None:
            params.update(wait=wait, timeout=f"{timeout:g}")
        if evidence:
            params["evidence"] = "embed"
        _, body = await self._call("GET", f"/proofs/{proof_id}", params=params)
        doc: dict[str, Any] = body
        return doc

    async def receipts(self, proof_ids: Sequence[str]) -> Batch:
        """Many receipts, in requests of up to 250 ids."""
        batch = Batch()
        for i in range(0, len(proof_ids), MAX_IDS):
            _, body = await self._call("GET", "/proofs", params={"ids": ",".join(proof_ids[i : i + MAX_IDS])})
            for doc in body["receipts"]:
                batch.receipts[doc["proof_id"]] = doc
            batch.not_found.extend(body["not_found"])
        return batch

    async def history(self, subject: str, domain: str, *, as_of: str | None = None) -> dict[str, Any]:
        """A history bundle (spec §14): ``subject``'s whole log in ``domain`` as of the newest anchored window
        (at or before ``as_of``), with the Fabric blocks that prove it. The owner's key, or a granted one."""
        params = {"domain": domain} | ({"as_of": as_of} if as_of is not None else {})
        _, body = await self._call("GET", f"/subjects/{quote(subject, safe=':')}/history", params=params)
        doc: dict[str, Any] = body
        return doc

    async def ledger_key(self) -> dict[str, Any]:
        """The local ledger's public key document (what ``--ledger-key`` takes)."""
        _, body = await self._call("GET", "/ledger/key")
        doc: dict[str, Any] = body
        return doc


def _problem(body: bytes, status: int) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return doc
    return {"status": status, "title": "error", "detail": body.decode(errors="replace")[:500]}
