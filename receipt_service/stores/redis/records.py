"""How the shared store's records are encoded in Redis values, and checked when read back."""

from __future__ import annotations

import hashlib
import json
import struct

from receipt_verifier.logs import frontier_root

from ...errors import CorruptRecordError
from ..base import (
    AnchorRecord,
    ApiKeyRecord,
    Batch,
    StoredBatch,
    SubjectHead,
    TreeRecord,
    tree_checksum,
)

BODY = struct.Struct(">QIHH")  # first ticks, count, tenant length, subject length
PAGE = 512  # keys per HMGET, and members per page of a sorted-set read


def hex16(n: int) -> str:
    return f"{n:016x}"


def batch_body(b: Batch) -> bytes:
    tenant, subject = b.tenant.encode(), b.subject.encode()
    raw = BODY.pack(b.first_ticks, b.count, len(tenant), len(subject)) + tenant + subject
    raw += b.proof_ids + b.hashes + b.nonces
    return raw + hashlib.blake2b(raw, digest_size=16).digest()


def stored_batch(value: bytes) -> StoredBatch:
    """A batch value as the add-batch script wrote it: ``first_seq,log_first,`` then the checked body."""
    try:
        seq_text, log_text, raw = value.split(b",", 2)
        first_seq, log_first = int(seq_text), int(log_text)
        body, checksum = raw[:-16], raw[-16:]
        if hashlib.blake2b(body, digest_size=16).digest() != checksum:
            raise ValueError("checksum")
        ticks, count, lt, ls = BODY.unpack_from(body)
        o = BODY.size
        tenant, subject = body[o : o + lt].decode(), body[o + lt : o + lt + ls].decode()
        o += lt + ls
        cols = body[o:]
        if len(cols) != 64 * count:
            raise ValueError("length")
        ids, hashes, nonces = cols[: 16 * count], cols[16 * count : 48 * count], cols[48 * count :]
        return StoredBatch(first_seq, Batch(tenant, ticks, ids, hashes, nonces, subject, log_first))
    except (ValueError, struct.error, UnicodeDecodeError):
        raise CorruptRecordError("a stored batch of submissions failed its integrity check; it is not served") from None


def tree_doc(t: TreeRecord, closed_ns: int) -> str:
    return json.dumps(
        {
            "window_id": t.window_id,
            "tree_index": t.tree_index,
            "first_seq": t.first_seq,
            "last_seq": t.last_seq,
            "root": t.root.hex(),
            "window_start": t.window_start,
            "window_end": t.window_end,
            "closed_ns": str(closed_ns),
            "heads_root": None if t.heads_root is None else t.heads_root.hex(),
            "heads_size": t.heads_size,
            "checksum": tree_checksum(t).hex(),
        },
        separators=(",", ":"),
    )


def tree_from_doc(doc: bytes | str) -> tuple[TreeRecord, int]:
    try:
        d = json.loads(doc)
        tree = TreeRecord(
            d["window_id"],
            d["tree_index"],
            d["first_seq"],
            d["last_seq"],
            bytes.fromhex(d["root"]),
            d["window_start"],
            d["window_end"],
            None if d["heads_root"] is None else bytes.fromhex(d["heads_root"]),
            d["heads_size"],
        )
        ok = len(tree.root) == 32 and bytes.fromhex(d["checksum"]) == tree_checksum(tree)
        closed = int(d["closed_ns"])
    except (ValueError, KeyError, TypeError):
        ok, closed = False, 0
    if not ok:
        raise CorruptRecordError("a stored tree failed its integrity check; it is not served")
    return tree, closed


def head_blob(h: SubjectHead) -> bytes:
    return h.size.to_bytes(8, "big") + h.root + b"".join(h.frontier)


def head_from_blob(subject: str, blob: bytes) -> SubjectHead:
    size, root, rest = int.from_bytes(blob[:8], "big"), blob[8:40], blob[40:]
    nodes = tuple(rest[i : i + 32] for i in range(0, len(rest), 32))
    if len(root) != 32 or len(rest) % 32 or len(nodes) != size.bit_count() or frontier_root(nodes) != root:
        raise CorruptRecordError(f"the stored head of {subject}'s log fails its check")
    return SubjectHead(subject, size, root, nodes)


def tree_key(window_id: str, tree_index: int) -> str:
    return f"{window_id}/{tree_index}"


def key_doc(k: ApiKeyRecord) -> str:
    return json.dumps(
        {
            "key_id": k.key_id,
            "tenant": k.tenant,
            "secret_hash": k.secret_hash.hex(),
            "scopes": sorted(k.scopes),
            "created": k.created,
            "revoked": k.revoked,
            "role": k.role,
        }
    )


def api_key_from_doc(doc: bytes) -> ApiKeyRecord:
    d = json.loads(doc)
    scopes = d["scopes"] if isinstance(d["scopes"], list) else []  # cjson writes an empty list as {}
    return ApiKeyRecord(
        d["key_id"],
        d["tenant"],
        bytes.fromhex(d["secret_hash"]),
        frozenset(scopes),
        d["created"],
        d["revoked"],
        d["role"],
    )


EVENT_FIELDS = (
    "replay_id",
    "event_hash",
    "owner",
    "receiver",
    "domain",
    "action",
    "time",
    "expiry",
    "doc",
    "proof_id",
    "tenant",
)


def anchor_from_doc(tree: TreeRecord, target: str, doc: bytes) -> AnchorRecord:
    try:
        d = json.loads(doc)
        return AnchorRecord(
            tree.window_id,
            tree.tree_index,
            target,
            d["anchor"],
            int(d["attempts"]),
            d["last_error"],
            int(d["created_ns"]),
            None if d["done_ns"] is None else int(d["done_ns"]),
        )
    except (ValueError, KeyError, TypeError):
        raise CorruptRecordError(
            f"tree {tree.window_id}/{tree.tree_index}: the {target} anchor job is damaged"
        ) from None
