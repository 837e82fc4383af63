"""The local anchor target shared by several instances: the signed, hash-chained ledger kept in Redis.

Entries are the same Ed25519-signed, hash-chained lines as the ledger file's, signed by the key every
instance shares (``ledger-key.pem``, copied from the first instance). An append is one script that
adds the line only if the chain has not moved since it was signed (else it signs again on the new
head), and returns the existing entry when the tree is already there: a tree is never anchored twice,
whichever instance sends it. The Redis server's AOF (fsync always) makes an append durable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.exceptions import RedisError

from receipt_verifier.errors import LedgerError
from receipt_verifier.ledger import (
    GENESIS_PREV,
    LaneTip,
    SignedEntry,
    entry_hash,
    key_id,
    parse_ledger_line,
    sign_entry,
)

from ..errors import AnchorBackendError
from ..ledger import TreeRoot, WindowProof, check_before_signing, ledger_entry, parse_proof_line, same_tree

KEYS = ("{hr:ledger}:lines", "{hr:ledger}:trees", "{hr:ledger}:head", "{hr:ledger}:key")
CHAIN_KEYS = ("{hr:ledger}:tips", "{hr:ledger}:proofs")  # each domain's chain tip; the windows' proofs

# a chained window, whole: only if the ledger and the domain's tip have not moved since it was signed
_APPEND_WINDOW = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return {'moved'} end
if (redis.call('HGET', KEYS[4], ARGV[2]) or '') ~= ARGV[3] then return {'tip'} end
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  if redis.call('HEXISTS', KEYS[2], ARGV[7 + 2 * i]) == 1 then return {'exists'} end
end
redis.call('RPUSH', KEYS[5], ARGV[5])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[7 + 2 * i], redis.call('RPUSH', KEYS[1], ARGV[8 + 2 * i]) - 1)
end
redis.call('SET', KEYS[3], ARGV[7 + 2 * n])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
return {'ok'}
"""

_APPEND = """
local at = redis.call('HGET', KEYS[2], ARGV[2])
if at then return {'exists', at} end
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return {'moved', ''} end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4])
return {'ok', ARGV[1]}
"""


class RedisLedger:
    """The signed ledger in Redis; the same interface as the file ledger where the backend uses it."""

    def __init__(self, client: Any, private_key: Ed25519PrivateKey) -> None:
        self._client = client
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)
        self.path = "redis " + KEYS[0]
        self._append = client.register_script(_APPEND)
        self._append_window = client.register_script(_APPEND_WINDOW)
        try:
            client.setnx(KEYS[3], self.key_id)
            stored = client.get(KEYS[3]).decode()
        except RedisError as exc:
            raise AnchorBackendError(f"shared ledger: {exc}") from None
        if stored != self.key_id:
            raise LedgerError(
                f"the shared ledger in Redis is signed by key {stored}, but this instance's ledger-key.pem is"
                f" {self.key_id}: copy ledger-key.pem from an instance that already runs"
            )

    def public_key_pem(self) -> str:
        """The public key auditors pin."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def __len__(self) -> int:
        return int(self._client.llen(KEYS[0]))

    def lines(self) -> list[bytes]:
        """The ledger as the lines of a ledger file (what an auditor exports and checks)."""
        return [bytes(line) for line in self._client.lrange(KEYS[0], 0, -1)]

    def entries(self) -> list[SignedEntry]:
        """Every entry, oldest first (parsed, not re-verified: ``verify_chain`` does that)."""
        lines = self._client.lrange(KEYS[0], 0, -1)
        return [parse_ledger_line(line, n) for n, line in enumerate(lines, 1)]

    def find(self, window_id: str, tree_index: int) -> SignedEntry | None:
        """The entry for a tree, if it was anchored."""
        at = self._client.hget(KEYS[1], f"{window_id}/{tree_index}")
        return None if at is None else parse_ledger_line(self._client.lindex(KEYS[0], int(at)), int(at) + 1)

    def lane_tip(self, domain: str) -> LaneTip | None:
        """The domain's newest chained window on the ledger."""
        raw = self._client.hget(CHAIN_KEYS[0], domain)
        return None if raw is None else LaneTip(**json.loads(raw))

    def proofs(self) -> list[WindowProof]:
        """The transition proofs of the chained windows."""
        return [parse_proof_line(line, n) for n, line in enumerate(self._client.lrange(CHAIN_KEYS[1], 0, -1), 1)]

    def append_window(self, roots: Sequence[TreeRoot], proof: WindowProof, now: str) -> list[SignedEntry]:
        """Anchor a chained window's trees after its domain's tip, atomically; idempotent for the window."""
        for _ in range(100):
            done = [self.find(r.window_id, r.tree_index) for r in roots]
            if all(d is not None for d in done):
                return [d for d in done if d is not None]
            tip = self.lane_tip(proof.domain)
            new_tip = check_before_signing(tip, roots, proof)
            pipe = self._client.pipeline(transaction=False)
            pipe.llen(KEYS[0])
            pipe.get(KEYS[2])
            size, raw_head = pipe.execute()
            seq, head = int(size), raw_head.decode() if raw_head else GENESIS_PREV
            old = "" if tip is None else json.dumps(asdict(tip))
            args: list[Any] = [seq, proof.domain, old, json.dumps(asdict(new_tip)), proof.to_json(), len(roots)]
            signed = []
            for root in roots:
                entry = ledger_entry(replace(root, chain_seq=proof.chain_seq, proof_hash=proof.hash), seq, head, now)
                signed.append(SignedEntry(entry, sign_entry(self._key, entry)))
                args += [f"{root.window_id}/{root.tree_index}", signed[-1].to_json()]
                seq, head = seq + 1, entry_hash(entry)
            args.append(head)
            (status,) = self._append_window(keys=[*KEYS[:3], *CHAIN_KEYS], args=args)
            if status == b"ok":
                return signed
        raise AnchorBackendError("shared ledger: the chain kept moving; the append is retried later")

    def append(self, root: TreeRoot, now: str) -> SignedEntry:
        """Anchor a tree root; idempotent for the same root across instances, ``ConflictError`` for another."""
        tree = f"{root.window_id}/{root.tree_index}"
        for _ in range(100):
            pipe = self._client.pipeline(transaction=False)
            pipe.llen(KEYS[0])
            pipe.get(KEYS[2])
            size, head = pipe.execute()
            entry = ledger_entry(root, int(size), head.decode() if head else GENESIS_PREV, now)
            signed = SignedEntry(entry, sign_entry(self._key, entry))
            line = signed.to_json()
            status, at = self._append(keys=KEYS[:3], args=[entry.seq, tree, line, entry_hash(entry)])
            if status == b"ok":
                return signed
            if status == b"exists":
                return same_tree(parse_ledger_line(self._client.lindex(KEYS[0], int(at)), int(at) + 1), root)
        raise AnchorBackendError("shared ledger: the chain kept moving; the append is retried later")
