"""JSON codec for receipts v1 and v2: a strict parser that mirrors ``receipt.schema.json``.

The parser enforces every constraint of the JSON Schema (tests prove both agree) plus the
size, op-count and depth limits, and is ~100x faster than a generic schema validator.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import strict_json
from .errors import LimitExceededError, MalformedReceiptError, UnknownContextError
from .model import (
    CONTEXT_V1,
    CONTEXT_V2,
    RECEIPT_TYPE,
    STATES,
    Anchor,
    Binding,
    Branch,
    FabricAnchor,
    LedgerEntry,
    LocalAnchor,
    Op,
    PendingAnchor,
    Receipt,
    State,
    TreeInfo,
    UnknownAnchor,
)


@dataclass(frozen=True)
class Limits:
    """Bounds on what the parser accepts."""

    max_bytes: int = 1 << 20
    max_ops: int = 512
    max_depth: int = 8
    max_anchors: int = 16
    max_branches: int = 8


DEFAULT_LIMITS = Limits()

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_RECEIVED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SIG_RE = re.compile(r"^[0-9a-f]{128}$")
_CHANNEL_RE = re.compile(r"^[a-z][a-z0-9.-]{0,248}$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,256}$")

_TOP_REQUIRED = frozenset({"@context", "type", "hash", "proof_id", "hash_received", "state", "branches"})
_TOP_ALLOWED = _TOP_REQUIRED | {"tree", "pending_anchors"}
_TOP_ALLOWED_V2 = _TOP_ALLOWED | {"domain", "subject", "subject_seq"}
_DOMAIN_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9._:%-]{16,128}$")
MAX_SUBJECT_SEQ = (1 << 53) - 1
_ENTRY_KEYS = frozenset(
    {"v", "seq", "prev", "window_id", "tree_index", "tree_size", "root", "window_start", "window_end", "time"}
)
_ENTRY_KEYS_V2 = _ENTRY_KEYS | {"domain", "heads_root", "heads_size"}
_ENTRY_KEYS_V3 = _ENTRY_KEYS_V2 | {"chain_seq", "proof_hash"}
_LOCAL_KEYS = frozenset({"type", "anchor_id", "key_id", "entry", "signature"})
_FABRIC_REQUIRED = frozenset({"type", "anchor_id", "channel", "tx_id", "block_number", "key", "chaincode"})
_FABRIC_ALLOWED = _FABRIC_REQUIRED | {"uris"}
_TREE_KEYS = frozenset({"window_id", "tree_index", "leaf_index", "tree_size"})
MAX_TREE_SIZE = 1 << 32
MAX_SAFE_INT = 2**53 - 1  # ledger seqs and sizes: integers every JSON reader holds exactly
MAX_VALUE_LEN = 512
_SHA_OP = Op("op", "sha-256")
_NODE_OP = Op("l", "01")
_SHA_DICT = {"op": "sha-256"}
_NODE_DICT = {"l": "01"}
_new_op = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


def _fail(where: str, what: str) -> MalformedReceiptError:
    return MalformedReceiptError(f"{where}: {what}")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _fail(where, f"expected an object, got {json_type(value)}")
    return value


def _keys(obj: Mapping[str, Any], where: str, required: frozenset[str], allowed: frozenset[str]) -> None:
    keys = obj.keys()
    if not required <= keys:
        missing = ", ".join(sorted(required - keys))
        raise _fail(where, f"missing field(s): {missing}")
    if not keys <= allowed:
        extra = ", ".join(sorted(keys - allowed))
        raise _fail(where, f"unknown field(s): {extra}")


def _str(value: Any, where: str, pattern: re.Pattern[str], what: str) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise _fail(where, f"must be {what}, got {value!r:.80}")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _fail(where, f"must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def parse_entry(value: Any, where: str) -> LedgerEntry:
    """Parse a local-ledger entry object."""
    obj = _obj(value, where)
    version = obj.get("v")
    if type(version) is not int or version not in (1, 2, 3):
        raise _fail(f"{where}.v", f"unsupported ledger entry version {version!r}")
    keys = (_ENTRY_KEYS, _ENTRY_KEYS_V2, _ENTRY_KEYS_V3)[version - 1]
    _keys(obj, where, keys, keys)
    domain = heads_root = heads_size = chain_seq = proof_hash = None
    if version == 3:
        chain_seq = _int(obj["chain_seq"], f"{where}.chain_seq", 0, MAX_SAFE_INT)
        proof_hash = _str(obj["proof_hash"], f"{where}.proof_hash", _HASH_RE, "64 lowercase hex characters")
    if version >= 2:
        domain = _str(obj["domain"], f"{where}.domain", _DOMAIN_RE, "a domain name")
        heads_root = _str(obj["heads_root"], f"{where}.heads_root", _HASH_RE, "64 lowercase hex characters")
        heads_size = _int(obj["heads_size"], f"{where}.heads_size", 0, MAX_SAFE_INT)
    return LedgerEntry(
        domain=domain,
        heads_root=heads_root,
        heads_size=heads_size,
        chain_seq=chain_seq,
        proof_hash=proof_hash,
        seq=_int(obj["seq"], f"{where}.seq", 0, MAX_SAFE_INT),
        prev=_str(obj["prev"], f"{where}.prev", _HASH_RE, "64 lowercase hex characters"),
        window_id=_str(obj["window_id"], f"{where}.window_id", _ID_RE, "an id of [A-Za-z0-9._:-]{1,64}"),
        tree_index=_int(obj["tree_index"], f"{where}.tree_index", 0, 2**31 - 1),
        tree_size=_int(obj["tree_size"], f"{where}.tree_size", 1, MAX_TREE_SIZE),
        root=_str(obj["root"], f"{where}.root", _HASH_RE, "64 lowercase hex characters"),
        window_start=_str(obj["window_start"], f"{where}.window_start", _TIME_RE, "an RFC 3339 UTC time"),
        window_end=_str(obj["window_end"], f"{where}.window_end", _TIME_RE, "an RFC 3339 UTC time"),
        time=_str(obj["time"], f"{where}.time", _TIME_RE, "an RFC 3339 UTC time"),
    )


_LOCAL_CACHE: dict[str, tuple[dict[str, Any], LocalAnchor]] = {}
LOCAL_CACHE_MAX = 4096  # parsed local anchors kept; the cache starts over when full


def _anchor(value: Any, where: str, remember: bool = True) -> Anchor:
    obj = _obj(value, where)
    kind = obj.get("type")
    if kind == "local" and not remember:
        return _local_anchor(obj, where)
    if kind == "local":
        # Receipts of one tree share one ledger entry: reuse its parse when the raw object is
        # exactly equal (a C-level dict compare), keyed by the signature it carries.
        sig = obj.get("signature")
        if type(sig) is str:
            hit = _LOCAL_CACHE.get(sig)
            if hit is not None and hit[0] == obj and _same_types(obj):
                return hit[1]
        anchor = _local_anchor(obj, where)
        if len(_LOCAL_CACHE) >= LOCAL_CACHE_MAX:
            _LOCAL_CACHE.clear()
        _LOCAL_CACHE[anchor.signature] = (copy.deepcopy(obj), anchor)
        return anchor
    return _other_anchor(obj, kind, where)


def parse_anchor(value: Any, where: str = "anchor", remember: bool = True) -> Anchor:
    """Parse one anchor object (as found in an ``anchors`` op); raise on anything off-spec.

    ``remember`` keeps a copy of a local anchor to reuse its parse for an equal object later; a
    caller that keeps its own (the text path) passes False."""
    return _anchor(value, where, remember)


def _local_anchor(obj: dict[str, Any], where: str) -> LocalAnchor:
    _keys(obj, where, _LOCAL_KEYS, _LOCAL_KEYS)
    return LocalAnchor(
        anchor_id=_str(obj["anchor_id"], f"{where}.anchor_id", _ID_RE, "an anchor id"),
        key_id=_str(obj["key_id"], f"{where}.key_id", _KEY_ID_RE, "16 lowercase hex characters"),
        entry=parse_entry(obj["entry"], f"{where}.entry"),
        signature=_str(obj["signature"], f"{where}.signature", _SIG_RE, "128 lowercase hex characters"),
    )


def _same_types(obj: dict[str, Any]) -> bool:
    """Dict equality treats 1, 1.0 and True alike: a cache hit also needs exact int types."""
    e = obj["entry"]
    return (
        type(e["v"]) is int
        and type(e["seq"]) is int
        and type(e["tree_index"]) is int
        and type(e["tree_size"]) is int
        and type(e.get("heads_size", 0)) is int
        and type(e.get("chain_seq", 0)) is int
    )


def _other_anchor(obj: dict[str, Any], kind: Any, where: str) -> Anchor:
    if kind == "fabric":
        _keys(obj, where, _FABRIC_REQUIRED, _FABRIC_ALLOWED)
        uris = obj.get("uris", [])
        if type(uris) is not list or len(uris) > 8 or any(type(u) is not str or not 1 <= len(u) <= 2048 for u in uris):
            raise _fail(f"{where}.uris", "must be a list of at most 8 URI strings")
        return FabricAnchor(
            anchor_id=_str(obj["anchor_id"], f"{where}.anchor_id", _ID_RE, "an anchor id"),
            channel=_str(obj["channel"], f"{where}.channel", _CHANNEL_RE, "a channel name"),
            tx_id=_str(obj["tx_id"], f"{where}.tx_id", _HASH_RE, "64 lowercase hex characters"),
            block_number=_int(obj["block_number"], f"{where}.block_number", 0, 2**63 - 1),
            key=_str(obj["key"], f"{where}.key", _KEY_RE, "a printable ledger key"),
            chaincode=_str(obj["chaincode"], f"{where}.chaincode", _ID_RE, "a chaincode name"),
            uris=tuple(uris),
        )
    _str(kind, f"{where}.type", _TYPE_RE, "an anchor type name")
    anchor_id = obj.get("anchor_id")
    if type(anchor_id) is not str or not 1 <= len(anchor_id) <= MAX_VALUE_LEN:
        raise _fail(f"{where}.anchor_id", "must be a string of 1 to 512 characters")
    return UnknownAnchor(type=str(kind), anchor_id=anchor_id, raw=dict(obj))


class _Walker:
    """Parses branches while counting ops against the limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.ops = 0

    def branches(self, value: Any, where: str, depth: int) -> tuple[Branch, ...]:
        if type(value) is not list:
            raise _fail(where, "must be a list of branches")
        if depth > self.limits.max_depth:
            raise LimitExceededError(f"{where}: branches nest deeper than {self.limits.max_depth} levels")
        if len(value) > self.limits.max_branches:
            raise LimitExceededError(f"{where}: more than {self.limits.max_branches} branches")
        return tuple(self.branch(b, f"{where}[{i}]", depth) for i, b in enumerate(value))

    def branch(self, value: Any, where: str, depth: int) -> Branch:
        obj = _obj(value, where)
        keys = obj.keys()
        if "ops" not in keys:
            raise _fail(where, "missing field(s): ops")
        if not keys <= {"label", "ops", "branches"}:
            raise _fail(where, f"unknown field(s): {', '.join(sorted(keys - {'label', 'ops', 'branches'}))}")
        label = None
        if "label" in keys:
            label = _str(obj["label"], f"{where}.label", _LABEL_RE, "a label of [A-Za-z0-9_.-]{1,64}")
        raw_ops = obj["ops"]
        if type(raw_ops) is not list or not raw_ops:
            raise _fail(f"{where}.ops", "must be a non-empty list")
        self.ops += len(raw_ops)
        if self.ops > self.limits.max_ops:
            raise LimitExceededError(f"{where}.ops: the receipt has more than {self.limits.max_ops} ops")
        ops: list[Op] = []
        append = ops.append
        for i, raw in enumerate(raw_ops):
            if raw == _SHA_DICT:  # two ops in three: a C-level compare decides them
                append(_SHA_OP)
                continue
            if raw == _NODE_DICT:
                append(_NODE_OP)
                continue
            if type(raw) is not dict or len(raw) != 1:
                raise _fail(f"{where}.ops[{i}]", "an op is an object with exactly one of l, r, op, anchors")
            kind = next(iter(raw))
            v = raw[kind]
            if kind == "op":  # {"op": "sha-256"} was taken above
                raise _fail(f"{where}.ops[{i}].op", f"unsupported hash {v!r:.40} (v1 knows only sha-256)")
            if kind == "l" or kind == "r":  # {"l": "01"} was taken above
                if type(v) is not str or not 1 <= len(v) <= MAX_VALUE_LEN:
                    raise _fail(f"{where}.ops[{i}].{kind}", "must be a string of 1 to 512 characters")
                append(_new_op(Op, (kind, v, ())))
            elif kind == "anchors":
                if type(v) is not list or not 1 <= len(v) <= self.limits.max_anchors:
                    raise _fail(
                        f"{where}.ops[{i}].anchors", f"must be a list of 1 to {self.limits.max_anchors} anchors"
                    )
                anchors = tuple(_anchor(a, f"{where}.ops[{i}].anchors[{j}]") for j, a in enumerate(v))
                if len({(a.type, a.anchor_id) for a in anchors}) != len(anchors):
                    raise _fail(f"{where}.ops[{i}].anchors", "lists the same anchor (type and anchor_id) twice")
                append(Op("anchors", "", anchors))
            else:
                raise _fail(f"{where}.ops[{i}]", f"unknown op {kind!r:.40}")
        children: tuple[Branch, ...] = ()
        if "branches" in keys:
            children = self.branches(obj["branches"], f"{where}.branches", depth + 1)
        return Branch(ops=tuple(ops), label=label, branches=children)


def _tree(value: Any) -> TreeInfo:
    obj = _obj(value, "tree")
    _keys(obj, "tree", _TREE_KEYS, _TREE_KEYS)
    info = TreeInfo(
        window_id=_str(obj["window_id"], "tree.window_id", _ID_RE, "an id of [A-Za-z0-9._:-]{1,64}"),
        tree_index=_int(obj["tree_index"], "tree.tree_index", 0, 2**31 - 1),
        leaf_index=_int(obj["leaf_index"], "tree.leaf_index", 0, MAX_TREE_SIZE - 1),
        tree_size=_int(obj["tree_size"], "tree.tree_size", 1, MAX_TREE_SIZE),
    )
    if info.leaf_index >= info.tree_size:
        raise _fail("tree.leaf_index", f"{info.leaf_index} is outside a tree of {info.tree_size} leaves")
    return info


def _pending(value: Any) -> tuple[PendingAnchor, ...]:
    if type(value) is not list or len(value) > 16:
        raise _fail("pending_anchors", "must be a list of at most 16 targets")
    out = []
    for i, item in enumerate(value):
        obj = _obj(item, f"pending_anchors[{i}]")
        _keys(obj, f"pending_anchors[{i}]", frozenset({"type", "target"}), frozenset({"type", "target"}))
        out.append(
            PendingAnchor(
                type=_str(obj["type"], f"pending_anchors[{i}].type", _TYPE_RE, "an anchor type name"),
                target=_str(obj["target"], f"pending_anchors[{i}].target", _ID_RE, "a target name"),
            )
        )
    return tuple(out)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``null``, ``number``, …) for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def load_json(data: bytes | str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode JSON text after checking its size."""
    if len(data) > limits.max_bytes:
        raise LimitExceededError(f"receipt is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        return strict_json.loads_receipt(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedReceiptError(f"receipt is not valid JSON: {exc}") from None


def parse_receipt(data: bytes | str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Receipt:
    """Parse a receipt from JSON text or an already decoded object; raise on anything off-spec."""
    doc = load_json(data, limits) if isinstance(data, bytes | str) else data
    obj = _obj(doc, "receipt")
    context = obj.get("@context")
    if context not in (CONTEXT_V1, CONTEXT_V2):
        raise UnknownContextError(
            f"@context {context!r:.100} is not supported; this verifier knows {CONTEXT_V1!r} and {CONTEXT_V2!r}"
        )
    if context == CONTEXT_V1:
        _keys(obj, "receipt", _TOP_REQUIRED, _TOP_ALLOWED)
        binding = None
    else:
        _keys(obj, "receipt", _TOP_REQUIRED | {"domain"}, _TOP_ALLOWED_V2)
        binding = parse_binding(obj)
    if obj["type"] != RECEIPT_TYPE:
        raise _fail("type", f"must be {RECEIPT_TYPE!r}, got {obj['type']!r:.40}")
    state = obj["state"]
    if state not in STATES:
        raise _fail("state", f"must be one of {', '.join(STATES)}, got {state!r:.40}")
    state_t: State = state
    walker = _Walker(limits)
    receipt = Receipt(
        hash=_str(obj["hash"], "hash", _HASH_RE, "a SHA-256 hash in 64 lowercase hex characters"),
        proof_id=_str(obj["proof_id"], "proof_id", _UUID_RE, "a lowercase UUID"),
        hash_received=_str(obj["hash_received"], "hash_received", _RECEIVED_RE, "YYYY-MM-DDTHH:MM:SS.fffffffZ"),
        state=state_t,
        branches=walker.branches(obj["branches"], "branches", 1),
        tree=_tree(obj["tree"]) if "tree" in obj else None,
        pending_anchors=_pending(obj["pending_anchors"]) if "pending_anchors" in obj else (),
        binding=binding,
    )
    _check_state(receipt)
    return receipt


def parse_binding(obj: Mapping[str, Any]) -> Binding:
    """``domain``, ``subject`` and ``subject_seq`` of a v2 receipt (the last two come together)."""
    domain = _str(obj["domain"], "domain", _DOMAIN_RE, "a domain name (lowercase letters, digits, '-')")
    if ("subject" in obj) != ("subject_seq" in obj):
        raise _fail("subject", "subject and subject_seq come together: both or neither")
    if "subject" not in obj:
        return Binding(domain)
    subject = _str(obj["subject"], "subject", SUBJECT_RE, "16-128 characters of A-Z a-z 0-9 . _ : % -")
    return Binding(domain, subject, _int(obj["subject_seq"], "subject_seq", 0, MAX_SUBJECT_SEQ))


def _check_state(r: Receipt) -> None:
    """The declared state must match what the receipt holds."""
    has_anchor = bool(r.anchors())
    if not r.branches:
        expected: State = "pending"
        if r.tree is not None:
            raise _fail("tree", "a pending receipt (no branches) has no tree yet")
    elif has_anchor and not r.pending_anchors:
        expected = "anchored"
    else:
        expected = "aggregated"
    if r.branches and r.tree is None:
        raise _fail("tree", "required once the receipt has a branch")
    if r.state != expected:
        raise _fail("state", f"says {r.state!r} but the receipt's content makes it {expected!r}")


# ---------------------------------------------------------------- serialisation


def anchor_to_dict(anchor: Anchor) -> dict[str, Any]:
    """Wire form of an anchor."""
    if isinstance(anchor, LocalAnchor):
        return {
            "type": "local",
            "anchor_id": anchor.anchor_id,
            "key_id": anchor.key_id,
            "entry": anchor.entry.to_dict(),
            "signature": anchor.signature,
        }
    if isinstance(anchor, FabricAnchor):
        out: dict[str, Any] = {
            "type": "fabric",
            "anchor_id": anchor.anchor_id,
            "channel": anchor.channel,
            "tx_id": anchor.tx_id,
            "block_number": anchor.block_number,
            "key": anchor.key,
            "chaincode": anchor.chaincode,
        }
        if anchor.uris:
            out["uris"] = list(anchor.uris)
        return out
    return dict(anchor.raw)


def op_to_dict(op: Op) -> dict[str, Any]:
    """Wire form of an op."""
    if op.kind == "anchors":
        return {"anchors": [anchor_to_dict(a) for a in op.anchors]}
    return {op.kind: op.value}


def branch_to_dict(branch: Branch) -> dict[str, Any]:
    """Wire form of a branch."""
    out: dict[str, Any] = {}
    if branch.label is not None:
        out["label"] = branch.label
    out["ops"] = [op_to_dict(op) for op in branch.ops]
    if branch.branches:
        out["branches"] = [branch_to_dict(b) for b in branch.branches]
    return out


def receipt_to_dict(r: Receipt) -> dict[str, Any]:
    """Wire form of a receipt."""
    out: dict[str, Any] = {
        "@context": r.context,
        "type": RECEIPT_TYPE,
        "hash": r.hash,
        "proof_id": r.proof_id,
        "hash_received": r.hash_received,
        "state": r.state,
    }
    if r.binding is not None:
        out.update(r.binding.to_dict())
    if r.tree is not None:
        out["tree"] = {
            "window_id": r.tree.window_id,
            "tree_index": r.tree.tree_index,
            "leaf_index": r.tree.leaf_index,
            "tree_size": r.tree.tree_size,
        }
    out["branches"] = [branch_to_dict(b) for b in r.branches]
    if r.pending_anchors:
        out["pending_anchors"] = [{"type": p.type, "target": p.target} for p in r.pending_anchors]
    return out


def dumps(r: Receipt) -> str:
    """Receipt as compact JSON text."""
    return json.dumps(receipt_to_dict(r), separators=(",", ":"))
