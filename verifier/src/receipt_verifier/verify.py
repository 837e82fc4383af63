"""Offline receipt verification: structure, proof_id binding, Merkle path, anchors."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import proof_id as pid
from .chain import received_outside
from .codec import DEFAULT_LIMITS, Limits, load_json, parse_receipt
from .errors import AnchorPolicyError, BranchError, FabricEvidenceError, HashMismatchError, LedgerError, UsageError
from .evidence import Blocks, is_bundle, load_document, split_bundle
from .fabric.evidence import FabricChecker, SeenBlocks
from .fabric.trust import ChannelTrust
from .fastpath import PathMemo, make_frozen, parse_and_walk
from .ledger import SeenEntries, SignedEntry, fork_reason, key_id, verify_entry_signature
from .merkle import Side, climb_hex, path_shape, sibling_kinds
from .model import BRANCH_LABEL, Anchor, FabricAnchor, LocalAnchor, Op, Receipt, UnknownAnchor
from .textpath import TextPath

_HEX = frozenset("0123456789abcdef")
_EVIDENCE_MARK = "/health-receipt/evidence/v1"  # a bundle's @context: bundles are parsed without receipt limits
_EVIDENCE_MARK_B = _EVIDENCE_MARK.encode()


class AnchorStatus(Enum):
    """Outcome for one anchor."""

    VERIFIED = "verified"
    FAILED = "failed"
    NOT_VERIFIED = "not_verified"


@dataclass(frozen=True)
class AnchorResult:
    """What the verifier concluded about one anchor."""

    type: str
    anchor_id: str
    status: AnchorStatus
    reason: str
    expected_value: str
    details: Mapping[str, Any] = field(default_factory=dict)  # where: channel, block, tx, times, signers

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {
            "type": self.type,
            "anchor_id": self.anchor_id,
            "status": self.status.value,
            "reason": self.reason,
            "expected_value": self.expected_value,
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


@dataclass(frozen=True)
class AnchorPolicy:
    """How many anchors must verify for a receipt to count as valid: all, any, or at least N (0: none)."""

    mode: str = "all"
    count: int = 0

    @classmethod
    def parse(cls, text: str) -> AnchorPolicy:
        """Parse ``all``, ``any`` or a positive integer."""
        if text in ("all", "any"):
            return cls(text)
        if text.isdigit():
            return cls("count", int(text))
        raise UsageError(f"anchor policy {text!r} must be 'all', 'any' or a number (0: no anchor required)")

    def describe(self) -> str:
        """Human text."""
        return {"all": "every anchor verified", "any": "at least one anchor verified"}.get(
            self.mode, f"at least {self.count} anchors verified"
        )

    def unmet_reason(self, anchors: tuple[AnchorResult, ...]) -> str | None:
        """Why ``anchors`` do not satisfy the policy, or ``None`` if they do."""
        verified = sum(a.status is AnchorStatus.VERIFIED for a in anchors)
        if self.mode == "count" and self.count == 0:
            return None
        if not anchors:
            return "the receipt has no anchor yet"
        if self.mode == "all" and verified < len(anchors):
            noun = "anchor" if len(anchors) == 1 else "anchors"
            return f"{verified} of {len(anchors)} {noun} verified; the policy requires all"
        if self.mode == "any" and verified == 0:
            return "no anchor verified; the policy requires at least one"
        if self.mode == "count" and verified < self.count:
            return f"{verified} anchor{'' if verified == 1 else 's'} verified; the policy requires {self.count}"
        return None


@dataclass(frozen=True)
class VerificationResult:
    """A verified receipt: its root, and each anchor's status."""

    receipt: Receipt
    root: str | None
    anchors: tuple[AnchorResult, ...]

    def satisfies(self, policy: AnchorPolicy) -> bool:
        """True when the anchors meet ``policy``."""
        return policy.unmet_reason(self.anchors) is None

    def to_dict(self, policy: AnchorPolicy | None = None) -> dict[str, Any]:
        """JSON form for reports."""
        out: dict[str, Any] = {
            "proof_id": self.receipt.proof_id,
            "hash": self.receipt.hash,
            "hash_received": self.receipt.hash_received,
            "state": self.receipt.state,
            "root": self.root,
            "anchors": [a.to_dict() for a in self.anchors],
            "pending_anchors": [f"{p.type}:{p.target}" for p in self.receipt.pending_anchors],
        }
        if policy is not None:
            reason = policy.unmet_reason(self.anchors)
            out["valid"] = reason is None
            if reason is not None:
                out["reason"] = reason
        return out


def verified_entries(result: VerificationResult) -> tuple[tuple[str, int, bytes], ...]:
    """(key id, seq, entry hash) of each local anchor ``result`` verified, in anchor order."""
    results = result.anchors
    if not results:
        return ()
    anchors = result.receipt.branches[0].ops[-1].anchors  # the anchors the results are for, in order
    if len(results) == 1:  # a v1 receipt's one local anchor: no list to build
        a = anchors[0]
        if results[0].status is not AnchorStatus.VERIFIED or not isinstance(a, LocalAnchor):
            return ()
        return ((a.key_id, a.entry.seq, a.entry.digest()),)
    verified = [a for a, r in zip(anchors, results, strict=True) if r.status is AnchorStatus.VERIFIED]
    return tuple([(a.key_id, a.entry.seq, a.entry.digest()) for a in verified if isinstance(a, LocalAnchor)])


FABRIC_FAILED_DETAILS = ("channel", "block_number", "tx_id")  # a Fabric anchor's details when a check fails
BlockVersion = tuple[int, str, tuple[str, ...]]  # one version of a block: its number, header hash, orderers


def blocks_of(number: int, details: Mapping[str, Any]) -> tuple[BlockVersion, ...]:
    """The blocks a verified Fabric anchor rests on: its block, then a newer config block it was made under."""
    own = (number, details["block_hash"], tuple(details["orderers"]))
    if "config_block_hash" not in details:
        return (own,)
    return own, (details["config_block"], details["config_block_hash"], tuple(details["config_orderers"]))


def verified_blocks(result: VerificationResult) -> tuple[tuple[str, int, tuple[BlockVersion, ...]], ...]:
    """(channel, block number, the blocks it rests on) of each Fabric anchor ``result`` verified."""
    return tuple(
        [
            (a.details["channel"], a.details["block_number"], blocks_of(a.details["block_number"], a.details))
            for a in result.anchors
            if a.type == "fabric" and a.status is AnchorStatus.VERIFIED
        ]
    )


def recompute_root(receipt: Receipt) -> tuple[bytes, tuple[Anchor, ...]]:
    """Walk the v1 branch, checking its shape against (leaf_index, tree_size); return root and anchors.

    v1 shape: ``l`` nonce||proof_id, sha-256, ``l`` 00, sha-256, then per level with a sibling
    ``l``/``r`` sibling, ``l`` 01, sha-256 (sides derived from the leaf index, never trusted),
    then at most one ``anchors`` op.
    """
    if len(receipt.branches) != 1:
        raise BranchError(f"a v1 receipt has exactly one branch, this one has {len(receipt.branches)}")
    branch = receipt.branches[0]
    if branch.label != BRANCH_LABEL or branch.branches:
        raise BranchError(f"the v1 branch is labelled {BRANCH_LABEL!r} and has no child branches")
    tree = receipt.tree
    assert tree is not None  # the codec requires a tree once a branch exists
    ops = branch.ops
    bound = b""
    off = 0  # v2: op numbers in messages count the binding op, which is taken out below
    if receipt.binding is not None:
        want_binding = receipt.binding.digest().hex()
        if len(ops) < 2 or ops[1] != ("r", want_binding, ()):
            raise BranchError(
                "ops[1] must be r: the SHA-256 of the receipt's canonical domain/subject/subject_seq (spec section 2.2)"
            )
        bound = bytes.fromhex(want_binding)
        ops = ops[:1] + ops[2:]
        off = 1
    n = len(ops)
    if n < 4:
        raise BranchError("the branch is too short to hold the salted leaf")
    salt, h1, leaf_prefix, h2 = ops[0], ops[1], ops[2], ops[3]
    if salt.kind != "l" or len(salt.value) != 64 or not _HEX.issuperset(salt.value):
        raise BranchError("ops[0] must be l: 16-byte nonce || 16-byte proof_id, as 64 lowercase hex")
    if salt.value[32:] != receipt.proof_id.replace("-", ""):
        raise BranchError("ops[0] does not commit to this receipt's proof_id")
    if h1.kind != "op" or leaf_prefix != ("l", "00", ()) or h2.kind != "op":
        raise BranchError(f"ops[{1 + off}..{3 + off}] must be sha-256, l 00, sha-256 (the RFC 6962 leaf hash)")
    sha = hashlib.sha256
    value = sha(b"\x00" + sha(bytes.fromhex(salt.value) + bytes.fromhex(receipt.hash) + bound).digest()).digest()
    fast = _walk_v1_path(ops, tree.leaf_index, tree.tree_size, value)
    if fast is not None:
        return fast
    _diagnose_v1_path(ops, tree.leaf_index, tree.tree_size, off)
    raise BranchError("the branch does not follow the v1 path of its leaf")  # the diagnosis names every case


def _diagnose_v1_path(ops: tuple[Op, ...], index: int, size: int, off: int) -> None:
    """Raise ``BranchError`` naming the first op where ``ops[4:]`` leaves the v1 path for (index, size).

    Only for branches the one-pass walk refused: it computes no root, it says what is wrong."""
    n = len(ops)
    i = 4
    for level, side in enumerate(path_shape(index, size)):
        if side is None:
            continue
        if i + 3 > n:
            raise BranchError(f"the path ends at level {level}; leaf {index} of {size} needs more")
        sib, prefix, h = ops[i], ops[i + 1], ops[i + 2]
        want = "l" if side is Side.LEFT else "r"
        if sib.kind != want:
            raise BranchError(
                f"ops[{i + off}]: leaf {index} of {size} needs the level-{level} sibling on the"
                f" {'left' if want == 'l' else 'right'} ({want}), found {sib.kind}"
            )
        if prefix != ("l", "01", ()) or h.kind != "op":
            raise BranchError(f"ops[{i + 1 + off}..{i + 2 + off}] must be l 01, sha-256 (an RFC 6962 node hash)")
        if len(sib.value) != 64 or not _HEX.issuperset(sib.value):
            raise BranchError(f"ops[{i + off}]: expected a 32-byte sibling hash in lowercase hex")
        i += 3
    if i < n:  # one anchors op alone at the end is what the one-pass walk takes: here, the tail is wrong
        raise BranchError(f"ops[{i + off}]: after the path only one anchors op may follow")


_CACHE_MAX = 65_536  # checked signatures / anchor objects kept (fork detection keeps every entry hash)
_NODE = Op("l", "01")
_SHA = Op("op", "sha-256")


def _walk_v1_path(ops: tuple[Op, ...], index: int, size: int, value: bytes) -> tuple[bytes, tuple[Anchor, ...]] | None:
    """Root and anchors when ``ops[4:]`` is exactly the v1 path for (index, size), else None.

    The checks are a few C-level comparisons and one hex decode; when this returns None the
    caller walks op by op to say precisely what is wrong.
    """
    kinds = sibling_kinds(index, size)
    k = len(kinds)
    end = 4 + 3 * k
    n = len(ops)
    if n != end and (n != end + 1 or ops[end].kind != "anchors"):
        return None
    sibs = ops[4:end:3]
    if [op.kind for op in sibs] != kinds or ops[5:end:3].count(_NODE) != k or ops[6:end:3].count(_SHA) != k:
        return None
    values = [op.value for op in sibs]
    if [len(v) for v in values].count(64) != k:  # each sibling on its own: no re-split concatenations
        return None
    root = climb_hex(value, kinds, values)
    if root is None:
        return None
    return root, (ops[end].anchors if n > end else ())


class Verifier:
    """Verifies receipts offline against pinned ledger keys. Thread-compatible, not thread-safe."""

    def __init__(
        self,
        ledger_keys: Iterable[Ed25519PublicKey] = (),
        *,
        limits: Limits = DEFAULT_LIMITS,
        strict_schema: bool = False,
        fabric_trust: Mapping[str, ChannelTrust] | None = None,
        strict_evidence: bool = False,
    ) -> None:
        self._keys = {key_id(k): k for k in ledger_keys}
        self._fabric = FabricChecker(dict(fabric_trust), strict=strict_evidence) if fabric_trust else None
        self._limits = limits
        self._strict_schema = strict_schema
        self._sig_cache: dict[tuple[str, str, bytes], None] = {}  # (key id, signature, the bytes it signs)
        self._seen = SeenEntries()  # fork detection; the CLI's workers leave it to the parent (_cli.workers)
        self._seen_blocks = SeenBlocks()  # ordering forks, the same way
        # a verified local anchor object and its result: every check that depends on the anchor alone is
        # done, and receipts of its tree share the result
        self._local_results: dict[int, tuple[LocalAnchor, AnchorResult]] = {}
        self._paths = PathMemo()  # receipts of one tree share the nodes where their paths meet
        self._text = TextPath(limits, self._paths)

    def pin_ledger(self, entries: Iterable[SignedEntry]) -> str:
        """Take a copy of a local ledger (its whole chain checked under a pinned key) as the entries seen first:
        a receipt whose entry differs from the copy's at its seq then fails as a fork (spec section 5.1),
        even when no other receipt shows the copy's. The key's id; ``LedgerError`` if the copy does not verify,
        ``LedgerForkError`` if it contradicts an entry seen before (nothing of it is taken then)."""
        return self._seen.pin(entries, self._keys.values())

    def verify(
        self,
        receipt: bytes | str | Mapping[str, Any] | Receipt,
        *,
        record: bytes | None = None,
        record_hash: str | None = None,
        blocks: Blocks | None = None,
    ) -> VerificationResult:
        """Verify one receipt (or evidence bundle); raise a ``receipt_verifier.errors.Error`` if it is malformed
        or tampered. ``blocks`` are Fabric blocks keyed by (channel, number), as an evidence bundle holds them."""
        walked: tuple[bytes, tuple[Anchor, ...]] | None = None
        if isinstance(receipt, str | bytes) and not self._strict_schema:  # a receipt as the service writes it
            walked_text = self._text.parse_and_walk(receipt)
            if walked_text is not None:
                receipt, walked = walked_text[0], walked_text[1:]
        if walked is None:
            if (isinstance(receipt, str) and _EVIDENCE_MARK in receipt[:300]) or (
                isinstance(receipt, bytes) and _EVIDENCE_MARK_B in receipt[:300]
            ):
                receipt = load_document(receipt)
            if isinstance(receipt, Mapping) and is_bundle(receipt):
                receipt, bundled = split_bundle(receipt)
                blocks = {**bundled, **(blocks or {})}
        if not isinstance(receipt, Receipt):
            if self._strict_schema:
                from .schema import validate_schema

                validate_schema(receipt, self._limits)
            doc = load_json(receipt, self._limits) if isinstance(receipt, bytes | str) else receipt
            fast = None if self._strict_schema else parse_and_walk(doc, self._limits, self._paths)
            if fast is None:
                receipt = parse_receipt(doc, self._limits)
            else:
                receipt, walked = fast[0], fast[1:]
        if record is not None:
            record_hash = hashlib.sha256(record).hexdigest()
        if record_hash is not None and record_hash.lower() != receipt.hash:
            raise HashMismatchError(
                f"the record's SHA-256 {record_hash.lower()} is not the hash this receipt covers ({receipt.hash})"
            )
        if walked is None or not pid.binding_holds(receipt.proof_id, receipt.hash, receipt.hash_received):
            pid.check_binding(receipt.proof_id, receipt.hash, receipt.hash_received)
        if not receipt.branches:
            return VerificationResult(receipt, None, ())
        root, anchors = walked or recompute_root(receipt)
        root_hex = root.hex()
        results = tuple([self._anchor(a, receipt, root_hex, blocks) for a in anchors])
        return make_frozen(VerificationResult, receipt=receipt, root=root_hex, anchors=results)

    def verify_policy(
        self,
        receipt: bytes | str | Mapping[str, Any] | Receipt,
        policy: AnchorPolicy = AnchorPolicy(),
        *,
        record: bytes | None = None,
        record_hash: str | None = None,
        blocks: Blocks | None = None,
    ) -> VerificationResult:
        """Like ``verify`` but also raise ``AnchorPolicyError`` when ``policy`` is not met."""
        result = self.verify(receipt, record=record, record_hash=record_hash, blocks=blocks)
        reason = policy.unmet_reason(result.anchors)
        if reason is not None:
            details = "; ".join(
                f"{a.type} {a.anchor_id}: {a.reason}" for a in result.anchors if a.status is not AnchorStatus.VERIFIED
            )
            raise AnchorPolicyError(
                f"receipt {result.receipt.proof_id}: {reason}" + (f" ({details})" if details else "")
            )
        return result

    def _anchor(self, anchor: Anchor, receipt: Receipt, root_hex: str, blocks: Blocks | None) -> AnchorResult:
        details: Mapping[str, Any] = {}
        if isinstance(anchor, LocalAnchor):
            status, reason = self._local(anchor, receipt, root_hex)
            if status is AnchorStatus.VERIFIED:  # receipts of one tree share their anchor's result (read-only)
                kept = self._local_results.get(id(anchor))
                if (
                    kept is not None
                    and kept[0] is anchor
                    and (kept[1].expected_value, kept[1].reason) == (root_hex, reason)
                ):
                    return kept[1]
            details = MappingProxyType(
                {"ledger_key": anchor.key_id, "seq": anchor.entry.seq, "time": anchor.entry.time}
            )
            result = self._result(anchor, status, reason, root_hex, details)
            if status is AnchorStatus.VERIFIED:
                if len(self._local_results) >= _CACHE_MAX:
                    self._local_results.clear()
                self._local_results[id(anchor)] = (anchor, result)  # holding it keeps its id from being reused
            return result
        elif isinstance(anchor, FabricAnchor):
            status, reason, details = self._fabric_anchor(anchor, receipt, root_hex, blocks)
        else:
            assert isinstance(anchor, UnknownAnchor)
            status, reason = AnchorStatus.NOT_VERIFIED, f"unknown anchor type {anchor.type!r}: kept, not checked"
        return self._result(anchor, status, reason, root_hex, details)

    @staticmethod
    def _result(
        anchor: Anchor, status: AnchorStatus, reason: str, root_hex: str, details: Mapping[str, Any]
    ) -> AnchorResult:
        return make_frozen(
            AnchorResult,
            type=anchor.type,
            anchor_id=anchor.anchor_id,
            status=status,
            reason=reason,
            expected_value=root_hex,
            details=details,
        )

    def _fabric_anchor(
        self, anchor: FabricAnchor, receipt: Receipt, root_hex: str, blocks: Blocks | None
    ) -> tuple[AnchorStatus, str, Mapping[str, Any]]:
        details = {k: getattr(anchor, k) for k in FABRIC_FAILED_DETAILS}
        block = (blocks or {}).get((anchor.channel, anchor.block_number))
        if block is None:
            return (
                AnchorStatus.NOT_VERIFIED,
                (
                    f"no evidence: block {anchor.block_number} of {anchor.channel} was not supplied"
                    " (fetch the receipt with ?evidence=embed)"
                ),
                details,
            )
        if self._fabric is None:
            return AnchorStatus.NOT_VERIFIED, "no trust file: pass --trust to check Fabric anchors", details
        try:
            reason, more = self._fabric.check(anchor, block, root_hex, receipt.tree, blocks)
        except FabricEvidenceError as exc:
            return AnchorStatus.FAILED, f"{type(exc).__name__}: {exc}", details
        record = more.get("chain_record")
        if isinstance(record, str):  # a chained window holds only hashes received within it
            start, end = _window_times(record)
            outside = received_outside(receipt.hash_received, start, end)
            if outside is not None:
                return AnchorStatus.FAILED, f"the chained window of tx {anchor.tx_id}: {outside}", details
        seen = [self._seen_blocks.see(anchor.channel, *block) for block in blocks_of(anchor.block_number, more)]
        fork = next((why for why in seen if why is not None), None)  # the last check, as the CLI's parent makes it
        if fork is not None:
            return AnchorStatus.FAILED, fork, details
        return AnchorStatus.VERIFIED, reason, {**details, **more}

    def _local(self, a: LocalAnchor, receipt: Receipt, root_hex: str) -> tuple[AnchorStatus, str]:
        e = a.entry
        tree = receipt.tree
        assert tree is not None
        # This very object passed every check that depends on the anchor alone (a tree's receipts share it).
        kept = self._local_results.get(id(a))
        known = kept is not None and kept[0] is a
        if not known and a.anchor_id != f"{a.key_id}:{e.seq}":
            return AnchorStatus.FAILED, f"anchor_id must be {a.key_id}:{e.seq}"
        if e.root != root_hex:
            return AnchorStatus.FAILED, f"ledger entry {e.seq} holds root {e.root}, the branch computes {root_hex}"
        if (e.window_id, e.tree_index, e.tree_size) != (tree.window_id, tree.tree_index, tree.tree_size):
            return AnchorStatus.FAILED, f"ledger entry {e.seq} is for another tree (window, index or size differ)"
        if e.chain_seq is not None:  # a chained window holds only hashes received within it
            outside = received_outside(receipt.hash_received, e.window_start, e.window_end)
            if outside is not None:
                return AnchorStatus.FAILED, f"ledger entry {e.seq}: {outside}"
        if kept is not None and known:
            return AnchorStatus.VERIFIED, kept[1].reason
        key = self._keys.get(a.key_id)
        if key is None:
            return AnchorStatus.NOT_VERIFIED, f"no pinned ledger key with id {a.key_id} (pass --ledger-key)"
        canonical = e.canonical_bytes()  # kept on the entry: its hash is made once
        cache_key = (a.key_id, a.signature, canonical)
        if cache_key not in self._sig_cache:
            try:
                verify_entry_signature(key, e, a.signature, canonical)
            except LedgerError as exc:
                return AnchorStatus.FAILED, str(exc)
            if not self._seen.see(a.key_id, e.seq, e.digest()):
                return AnchorStatus.FAILED, fork_reason(a.key_id, e.seq)
            if len(self._sig_cache) >= _CACHE_MAX:
                self._sig_cache.clear()
            self._sig_cache[cache_key] = None
        return AnchorStatus.VERIFIED, f"signed ledger entry {e.seq}"  # _anchor keeps the result


@functools.lru_cache(maxsize=256)
def _window_times(chain_record: str) -> tuple[str, str]:
    """(window_start, window_end) of a chain record that the evidence check already parsed."""
    doc = json.loads(chain_record)
    return str(doc.get("window_start")), str(doc.get("window_end"))
