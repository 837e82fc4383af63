"""The local anchor target shared by several instances: the signed, hash-chained ledger kept in Redis.

Entries are the same Ed25519-signed, hash-chained lines as the ledger file's, signed by the key every
instance shares (``ledger-key.pem``, copied from the first instance). An append is one script that
adds the line only if the chain has not moved since it was signed (else it signs again on the new
head), and returns the existing entry when the tree is already there: a tree is never anchored twice,
whichever instance sends it. The Redis server's AOF (fsync always) makes an append durable.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.exceptions import RedisError

from receipt_verifier.errors import LedgerError
from receipt_verifier.ledger import GENESIS_PREV, SignedEntry, entry_hash, key_id, parse_ledger_line, sign_entry

from ..errors import AnchorBackendError
from ..ledger import TreeRoot, ledger_entry, same_tree

KEYS = ("{hr:ledger}:lines", "{hr:ledger}:trees", "{hr:ledger}:head", "{hr:ledger}:key")

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
