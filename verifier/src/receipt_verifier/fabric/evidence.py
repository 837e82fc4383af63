"""Check a ``fabric`` anchor against its block and a pinned channel: offline, trusting no peer.

Block: the data hash over every envelope; orderer signatures over (metadata value, signature header,
DER header) that satisfy the channel's block validation policy, by certificates that chain to the
pinned orderer roots; the block's last-config index is the pinned config block. Transaction: the
creator's signature and transaction id, the channel, the proposal hash, every endorsement, the
pinned endorsement policy (peer role), and a write of exactly the receipt's root under the anchor's
key by the anchor chaincode. A block made under a newer config than the pinned one is checked under
that config, once the config block (from the evidence) verifies under the pinned config. The per-transaction validation flag in the block metadata is written by
a peer and signed by nobody: it is never read; the transaction is re-validated instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_event_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf.message import DecodeError

from ..errors import (
    BlockFormatError,
    ChannelMismatchError,
    ConfigMismatchError,
    CreatorSignatureError,
    EndorsementError,
    FabricEvidenceError,
    IdentityError,
    OrdererSignatureError,
    TrustFileError,
    WriteSetError,
)
from ..model import FabricAnchor, TreeInfo
from . import policy as pol
from .blocks import ENDORSER_TRANSACTION, Block, envelope_payload, orderer_metadata, parse_block
from .msp import Identity, MSPs
from .trust import ChannelTrust, bft_quorum, channel_trust

_CACHE = 1024
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class CheckedBlock:
    """A block whose orderer signatures satisfied its channel's policy."""

    block: Block
    signers: tuple[str, ...]
    tx_index: dict[str, int]  # tx id -> envelope position
    trust: ChannelTrust  # the config the block was made under (the pinned one, or a newer verified one)


TIP_PREFIX = "\x00tip\x00"  # the chaincode's key of a lane's chain record (spec section 14.7)
MAX_CHAINED_TREES = 64
BATCH_EVENT = "AppendWindows"  # the chaincode's event of several windows in one transaction (spec section 14.8)


@dataclass(frozen=True)
class CheckedTx:
    """An anchor transaction that passed every check, with what it wrote."""

    records: dict[str, dict[str, object]]  # anchor key -> stored record (a chained window writes one per tree)
    endorsers: tuple[str, ...]
    tx_time: str
    tip: bytes | None = None  # a chained window's chain record, exactly as written (spec section 14.7)
    chain_records: tuple[bytes, ...] = ()  # every window's record, in order (AppendWindows: several; the last is tip)

    def chain_record(self, window_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """The chain record of the window ``window_id`` among those the transaction appended, raw and
        parsed (None: none, or more than one)."""
        found = self._by_window.get(window_id, [])
        return found[0] if len(found) == 1 else None

    @functools.cached_property
    def _by_window(self) -> dict[str, list[tuple[bytes, dict[str, Any]]]]:
        """Every chain record by its window id, parsed once (a transaction's receipts share them)."""
        out: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        for raw in self.chain_records:
            try:
                doc = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("window_id"), str):
                out.setdefault(doc["window_id"], []).append((raw, doc))
        return out


class SeenBlocks:
    """The header hash and signers of each block verified so far, one per (channel, number): two versions of
    one block, each signed under the channel's policy, are an ordering fork, which the orderers that signed
    both made (on BFT, more consenters than the channel tolerates). A few hundred bytes a block."""

    def __init__(self) -> None:
        self._by_place: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {}

    def see(self, channel: str, number: int, header_hash: str, signers: Sequence[str]) -> str | None:
        """Remember a verified block; the reason it is a fork when another version of it was seen first."""
        first = self._by_place.setdefault((channel, number), (header_hash, tuple(signers)))
        if first[0] == header_hash:
            return None
        both = sorted(set(first[1]) & set(signers))
        return (
            f"ordering fork: block {number} of {channel} exists in two versions, each signed under the channel's"
            f" policy (headers {first[0][:16]}… and {header_hash[:16]}…); signed both: {', '.join(both) or 'no one'}"
        )


class FabricChecker:
    """Verifies Fabric anchors against pinned channels; caches checked blocks and transactions."""

    def __init__(self, channels: dict[str, ChannelTrust], *, strict: bool = False) -> None:
        wrong = sorted(name for name, t in channels.items() if t.channel != name)
        if wrong:
            raise TrustFileError(f"channel(s) {', '.join(wrong)} are pinned with another channel's config block")
        self.channels = channels
        self.strict = strict  # evidence that contradicts the trust file fails the anchor instead of a warning
        self._msps: dict[str, MSPs] = {t.config_block_hash: t.msps() for t in channels.values()}
        self._configs: dict[tuple[str, str], ChannelTrust] = {}  # (channel, config block hash) -> verified newer config
        # (channel, number, the bytes' SHA-256) -> a verified config block copy's config and orderers
        self._config_copies: OrderedDict[tuple[str, int, str], tuple[ChannelTrust, tuple[str, ...]]] = OrderedDict()
        self._blocks: OrderedDict[tuple[str, str], CheckedBlock] = OrderedDict()
        self._txs: OrderedDict[tuple[str, str, str, str], CheckedTx] = OrderedDict()
        self._digests = _Digests()

    def check(
        self,
        anchor: FabricAnchor,
        block_bytes: bytes,
        root_hex: str,
        tree: TreeInfo | None,
        blocks: Mapping[tuple[str, int], bytes] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(why the anchor holds, details); raises a ``FabricEvidenceError`` subclass naming the failed check.

        ``blocks`` may hold newer config blocks of the channel (an evidence bundle does): a block made
        under a config newer than the pinned one is checked under that config once the config block
        itself verifies under the pinned one."""
        pinned = self.channels.get(anchor.channel)
        if pinned is None:
            raise ChannelMismatchError(f"channel {anchor.channel} is not in the trust file")
        warnings = self._contradictions(pinned, blocks or {})
        if warnings and self.strict:
            raise ConfigMismatchError(f"{warnings[0]} (--strict)")
        checked, config_signers = self._block(pinned, block_bytes, blocks or {})
        block = checked.block
        if block.number != anchor.block_number:
            raise BlockFormatError(
                f"the evidence is block {block.number}, the anchor names block {anchor.block_number}"
            )
        tx = self._tx(checked.trust, checked, anchor)
        record = tx.records.get(anchor.key)
        if record is None:
            wrote = f"key {', '.join(tx.records)}" if tx.records else "no anchor key (an empty window)"
            raise WriteSetError(f"the transaction wrote {wrote}, the anchor names {anchor.key}")
        if tree is not None and anchor.key != f"{tree.window_id}/{tree.tree_index}":
            raise WriteSetError(f"key {anchor.key} is not this receipt's tree {tree.window_id}/{tree.tree_index}")
        if record.get("root") != root_hex:
            raise WriteSetError(f"the transaction wrote root {record.get('root')}, the branch computes {root_hex}")
        if tree is not None and record.get("tree_size") != tree.tree_size:
            raise WriteSetError(f"the transaction wrote tree size {record.get('tree_size')}, not {tree.tree_size}")
        reason = (
            f"block {block.number} of {anchor.channel} signed by {', '.join(checked.signers)};"
            f" tx endorsed by {', '.join(tx.endorsers)}"
        )
        newer = checked.trust is not pinned
        if newer:
            reason += f"; under config block {checked.trust.config_block_number}, verified under the pinned one"
        details = {
            "block_hash": block.header_hash,
            "tx_time": tx.tx_time,
            "config_block": checked.trust.config_block_number,
            "orderers": list(checked.signers),
            "endorsers": list(tx.endorsers),
        }
        if newer:  # the config block, a block of the channel too (an ordering fork may be of it)
            config_hash = checked.trust.config_block_hash
            details.update(
                config_block_hash=config_hash,
                config_orderers=list(config_signers),
            )
        if "heads_root" in record:  # a domain window: its subject-heads commitment, in the same write
            details.update(
                heads_root=record["heads_root"],
                heads_size=record.get("heads_size"),
                window_end=record.get("window_end"),
            )
        if tx.tip is not None:  # a chained window: its place in the lane's chain
            window_id = anchor.key.rsplit("/", 1)[0]
            found = tx.chain_record(window_id)
            if found is None:
                raise WriteSetError(f"the transaction holds no single chain record of window {window_id}")
            chain_record, chain = found
            _same_window(chain, record, anchor.key)
            details.update(
                chain_seq=record.get("chain_seq"),
                lane=record.get("lane"),
                chain_record=chain_record.decode("utf-8", "replace"),
            )
        if warnings:
            details["warnings"] = warnings
        return reason, details

    def _contradictions(self, pinned: ChannelTrust, blocks: Mapping[tuple[str, int], bytes]) -> list[str]:
        """The evidence's copy of the pinned config block, when it is not byte for byte the pinned one
        (the verdict rests on the pinned block either way; a bundle that contradicts the trust file
        deserves a word)."""
        copy = blocks.get((pinned.channel, pinned.config_block_number))
        if copy is None or not pinned.config_block_sha256:
            return []
        if self._digests.of(copy) == pinned.config_block_sha256:
            return []
        number = pinned.config_block_number
        return [f"the evidence holds a config block {number} of {pinned.channel} that differs from the pinned one"]

    # ------------------------------------------------------------------ block

    def _block(
        self, pinned: ChannelTrust, data: bytes, blocks: Mapping[tuple[str, int], bytes]
    ) -> tuple[CheckedBlock, tuple[str, ...]]:
        """The checked block, and the orderers of the newer config block it was made under (none: the pinned)."""
        key = (pinned.channel, self._digests.of(data))
        cached = self._blocks.get(key)
        if cached is not None:
            if cached.trust is pinned:
                return cached, ()
            # made under a newer config: this evidence must hold that config block too (as for a fresh
            # verifier, whatever was checked before), and the same version of it, else the block is checked again
            trust, config_signers = self._config(pinned, cached.trust.config_block_number, blocks)
            if trust is cached.trust:
                return cached, config_signers
        block = parse_block(data)
        md, last_config = orderer_metadata(block)
        trust, config_signers = (
            (pinned, ()) if last_config == pinned.config_block_number else self._config(pinned, last_config, blocks)
        )
        signers = self._orderer_signers(trust, block, md)
        index: dict[str, int] = {}
        for i, raw in enumerate(block.envelopes):
            _, _, ch, _ = envelope_payload(raw, f"block {block.number} envelope {i}")
            if ch.tx_id:
                index.setdefault(str(ch.tx_id), i)
        checked = CheckedBlock(block, tuple(s.name for s in signers), index, trust)
        _put(self._blocks, key, checked)
        return checked, config_signers

    def _orderer_signers(self, trust: ChannelTrust, block: Block, md: Any) -> list[Identity]:
        """The distinct valid orderer signers of a block; ``OrdererSignatureError`` unless they satisfy the policy.

        As Fabric's ``BlockSignatureVerifier``: on a BFT channel a signature with an empty signature header
        and an identifier header is the consenter's of that id in the config's mapping (an unknown id is
        skipped), over ``OrdererBlockMetadata || IdentifierHeader || DER(header)``; any other signature
        names its signer in its signature header, over ``OrdererBlockMetadata || SignatureHeader || DER(header)``.
        """
        msps = self._msps_of(trust)
        signers: list[Identity] = []
        header = block.header_der
        problems = []
        seen: set[tuple[str, str]] = set()  # Fabric counts an identity once: by MSP and certificate
        for sig in md.signatures:
            try:
                if trust.v3 and not sig.signature_header and sig.identifier_header:
                    ident_id = _identifier(bytes(sig.identifier_header))
                    consenter = trust.consenter(ident_id)
                    if consenter is None:
                        problems.append(f"a signature names consenter id {ident_id}, not in the consenter mapping")
                        continue
                    creator, signed_header = consenter.serialized, bytes(sig.identifier_header)
                else:
                    signed_header = bytes(sig.signature_header)
                    creator = bytes(_signature_header(signed_header).creator)
            except BlockFormatError as exc:  # Fabric rejects the whole block, not only this signature
                raise OrdererSignatureError(f"block {block.number}: {exc}") from None
            try:
                ident = msps.identity(creator, frozenset(trust.orderer_orgs))
                ident.verify(bytes(sig.signature), bytes(md.value) + signed_header + header, "orderer")
            except IdentityError as exc:
                problems.append(str(exc))
                continue
            key = (ident.msp_id, pol.der_sha256(ident.cert))
            if key not in seen:
                seen.add(key)
                signers.append(ident)
        if not pol.satisfied(trust.block_validation, signers):
            detail = "; ".join(problems) or f"{len(signers)} valid signature(s)"
            if trust.bft:
                shas = {c.identity_sha256 for c in trust.consenters}
                consenters = sum(1 for s in signers if pol.der_sha256(s.cert) in shas)
                detail = f"{consenters} distinct consenter(s) signed, the quorum is {bft_quorum(len(trust.consenters))}"
                detail += "".join(f"; {p}" for p in problems)
            raise OrdererSignatureError(
                f"block {block.number}: orderer signatures do not satisfy {pol.describe(trust.block_validation)}"
                f" ({detail})"
            )
        return signers

    def _config(
        self, pinned: ChannelTrust, index: int, blocks: Mapping[tuple[str, int], bytes]
    ) -> tuple[ChannelTrust, tuple[str, ...]]:
        """The channel's newer config block ``index`` in this evidence, verified under the pinned config (every
        copy's own signatures: they lie outside the header), and the orderers who signed that copy."""
        if index < pinned.config_block_number:
            raise ConfigMismatchError(
                f"the block was made under config block {index}, older than the pinned config block"
                f" {pinned.config_block_number}"
            )
        data = blocks.get((pinned.channel, index))
        if data is None:
            raise ConfigMismatchError(
                f"the block was made under config block {index}; the trust file pins block"
                f" {pinned.config_block_number} and the evidence does not include block {index}"
            )
        copy_key = (pinned.channel, index, self._digests.of(data))
        known = self._config_copies.get(copy_key)
        if known is not None:  # these very bytes verified before: not parsed again
            return known
        try:
            cfg_block = parse_block(data)
        except FabricEvidenceError as exc:
            raise ConfigMismatchError(f"config block {index}: {type(exc).__name__}: {exc}") from None
        if cfg_block.number != index:
            raise ConfigMismatchError(f"the evidence's config block is block {cfg_block.number}, not {index}")
        md, own = orderer_metadata(cfg_block)
        if own != index:
            raise ConfigMismatchError(f"block {index} is not a config block (it names config block {own})")
        try:
            signers = tuple(s.name for s in self._orderer_signers(pinned, cfg_block, md))
        except OrdererSignatureError as exc:
            raise ConfigMismatchError(f"config block {index} does not verify under the pinned config: {exc}") from None
        cached = self._configs.get((pinned.channel, cfg_block.header_hash))  # its config read before
        if cached is not None:
            _put(self._config_copies, copy_key, (cached, signers))
            return cached, signers
        try:
            newer = channel_trust(data)
        except TrustFileError as exc:
            raise ConfigMismatchError(f"config block {index}: {exc}") from None
        except (DecodeError, KeyError, ValueError) as exc:  # signed by the orderers, yet not a config we can read
            raise ConfigMismatchError(f"config block {index}: {type(exc).__name__}: {exc}") from None
        if newer.channel != pinned.channel:
            raise ChannelMismatchError(f"config block {index} is for channel {newer.channel}")
        self._configs[(pinned.channel, cfg_block.header_hash)] = newer
        _put(self._config_copies, copy_key, (newer, signers))
        return newer, signers

    def _msps_of(self, trust: ChannelTrust) -> MSPs:
        msps = self._msps.get(trust.config_block_hash)
        if msps is None:
            msps = self._msps[trust.config_block_hash] = trust.msps()
        return msps

    # ------------------------------------------------------------------ transaction

    def _tx(self, trust: ChannelTrust, checked: CheckedBlock, anchor: FabricAnchor) -> CheckedTx:
        block = checked.block
        key = (trust.channel, anchor.tx_id, block.header_hash, trust.config_block_hash)  # checked under this config
        cached = self._txs.get(key)
        if cached is not None:
            return cached
        pos = checked.tx_index.get(anchor.tx_id)
        if pos is None:
            raise BlockFormatError(f"transaction {anchor.tx_id} is not in block {block.number}")
        where = f"tx {anchor.tx_id[:16]}…"
        env, payload, ch, sh = envelope_payload(block.envelopes[pos], where)
        if ch.type != ENDORSER_TRANSACTION:
            raise BlockFormatError(f"{where} is not an endorser transaction (type {ch.type})")
        if ch.channel_id != anchor.channel:  # the channel pinned under that name, and its newer configs
            raise ChannelMismatchError(f"{where} belongs to channel {ch.channel_id}, not {anchor.channel}")
        msps = self._msps_of(trust)
        apps = frozenset(trust.application_orgs)
        try:
            creator = msps.identity(bytes(sh.creator), apps)
            creator.verify(bytes(env.signature), bytes(env.payload), f"{where} envelope")
        except IdentityError as exc:
            raise CreatorSignatureError(str(exc)) from None
        if hashlib.sha256(bytes(sh.nonce) + bytes(sh.creator)).hexdigest() != ch.tx_id:
            raise CreatorSignatureError(f"{where}: the tx id is not SHA-256(nonce || creator)")
        try:
            tx = transaction_pb2.Transaction.FromString(payload.data)
            if len(tx.actions) != 1:
                raise BlockFormatError(f"{where} has {len(tx.actions)} actions; an anchor has one")
            cap = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
            prp_bytes = bytes(cap.action.proposal_response_payload)
            prp = proposal_response_pb2.ProposalResponsePayload.FromString(prp_bytes)
            action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
        except DecodeError:
            raise BlockFormatError(f"{where}: the transaction does not parse") from None
        proposal_hash = hashlib.sha256(
            bytes(payload.header.channel_header)
            + bytes(payload.header.signature_header)
            + bytes(cap.chaincode_proposal_payload)
        ).digest()
        if proposal_hash != prp.proposal_hash:
            raise EndorsementError(f"{where}: the endorsed proposal hash is not the transaction's proposal")
        endorsers: list[Identity] = []
        for e in cap.action.endorsements:
            try:
                ident = msps.identity(bytes(e.endorser), apps)
                ident.verify(bytes(e.signature), prp_bytes + bytes(e.endorser), f"{where} endorsement")
            except IdentityError as exc:
                raise EndorsementError(str(exc)) from None
            if ident.serialized not in (x.serialized for x in endorsers):
                endorsers.append(ident)
        if not pol.satisfied(trust.endorsement, endorsers):
            names = ", ".join(x.name for x in endorsers) or "nobody"
            raise EndorsementError(
                f"{where}: endorsed by {names}, which does not satisfy {pol.describe(trust.endorsement)}"
            )
        records, tip, chain_records = _writes(action, anchor, where)
        ts = ch.timestamp
        when = datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000)
        tx_time = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        checked_tx = CheckedTx(records, tuple(x.name for x in endorsers), tx_time, tip, chain_records)
        _put(self._txs, key, checked_tx)
        return checked_tx


def _identifier(data: bytes) -> int:
    """The consenter id of a BFT signature's identifier header."""
    try:
        return int(common_pb2.IdentifierHeader.FromString(data).identifier)
    except DecodeError:
        raise BlockFormatError("an orderer identifier header does not parse") from None


def _signature_header(data: bytes) -> Any:
    try:
        return common_pb2.SignatureHeader.FromString(data)
    except DecodeError:
        raise BlockFormatError("an orderer signature header does not parse") from None


def _writes(
    action: Any, anchor: FabricAnchor, where: str
) -> tuple[dict[str, dict[str, object]], bytes | None, tuple[bytes, ...]]:
    """(anchor key -> stored record, chain record or None, every window's chain record) of the anchor
    chaincode's writes: one key (``AnchorRoot``), or one per tree of a chained window plus its lane's tip
    (``AppendWindow``), or of several windows (``AppendWindows``, whose event holds each window's record)."""
    if action.response.status != 200:
        raise WriteSetError(f"{where}: the chaincode answered status {action.response.status}")
    if action.chaincode_id.name != anchor.chaincode:
        raise WriteSetError(f"{where} ran chaincode {action.chaincode_id.name}, not {anchor.chaincode}")
    try:
        rwset = rwset_pb2.TxReadWriteSet.FromString(action.results)
    except DecodeError:
        raise WriteSetError(f"{where}: the read/write set does not parse") from None
    writes = []
    tips = []
    for ns in rwset.ns_rwset:
        try:
            kv = kv_rwset_pb2.KVRWSet.FromString(ns.rwset)
        except DecodeError:
            raise WriteSetError(f"{where}: the reads and writes of namespace {ns.namespace} do not parse") from None
        for w in kv.writes:
            if ns.namespace != anchor.chaincode:
                raise WriteSetError(f"{where} writes to namespace {ns.namespace}")
            if not w.is_delete and not w.key.startswith("\x00"):
                writes.append((str(w.key), bytes(w.value)))
            elif not w.is_delete and w.key.startswith(TIP_PREFIX):
                tips.append(bytes(w.value))
    if len(tips) > 1:
        raise WriteSetError(f"{where} writes {len(tips)} chain tips; a chained window writes one")
    tip = tips[0] if tips else None
    chain_records: tuple[bytes, ...] = () if tip is None else (tip,)
    if tip is not None:
        batch = batch_records(action.events)
        if batch is not None:
            if not batch or batch[-1] != tip:
                raise WriteSetError(f"{where}: the last record of its {BATCH_EVENT} event is not the tip it wrote")
            chain_records = batch
    if tip is None and len(writes) != 1:
        raise WriteSetError(f"{where} writes {len(writes)} anchor keys; an anchor transaction writes exactly one")
    if tip is not None and len(writes) > MAX_CHAINED_TREES * len(chain_records):  # none: empty windows (§14.7)
        raise WriteSetError(
            f"{where} writes {len(writes)} anchor keys; {len(chain_records)} chained window(s) write at most"
            f" {MAX_CHAINED_TREES * len(chain_records)}"
        )
    records: dict[str, dict[str, object]] = {}
    for key, value in writes:
        try:
            record = json.loads(value)
        except (ValueError, RecursionError):
            raise WriteSetError(f"{where}: the value written under {key} is not an anchor record") from None
        if not isinstance(record, dict) or record.get("key") != key:
            raise WriteSetError(f"{where}: the value written under {key} is not an anchor record for that key")
        if tip is not None and "chain_seq" not in record:
            raise WriteSetError(f"{where}: the record under {key} has no chain position, but the tx wrote a tip")
        records[key] = record
    return records, tip, chain_records


def _same_window(chain: dict[str, Any], record: Mapping[str, object], key: str) -> None:
    """The chain record of a tree's window says what the tree's anchor record says of that window."""
    for mine, theirs in (
        ("seq", "chain_seq"),
        ("lane", "lane"),
        ("heads_root", "heads_root"),
        ("window_start", "window_start"),
        ("window_end", "window_end"),
    ):
        if chain.get(mine) != record.get(theirs):
            raise WriteSetError(
                f"the chain record of {key}'s window says {mine} {chain.get(mine)!r}, its anchor record"
                f" {theirs} {record.get(theirs)!r}"
            )


def batch_records(events: bytes) -> tuple[bytes, ...] | None:
    """The window records of an ``AppendWindows`` event (one per line), or None for any other event."""
    if not events:
        return None
    try:
        event = chaincode_event_pb2.ChaincodeEvent.FromString(events)
    except DecodeError:
        return None
    if event.event_name != BATCH_EVENT:
        return None
    return tuple(bytes(event.payload).split(b"\n"))


class _Digests:
    """SHA-256 hex of block bytes, hashed once per bytes object: every receipt of a block passes the same
    object, and hashing a block of a few hundred kilobytes again per receipt was most of a warm check.
    An entry holds its object, so its id cannot be reused while it is there; at most ``limit`` bytes
    are held, and the map starts over when it would hold more."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self.held = 0
        self._by_id: dict[int, tuple[bytes, str]] = {}

    def of(self, data: bytes) -> str:
        hit = self._by_id.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
        digest = hashlib.sha256(data).hexdigest()
        if len(data) <= self.limit:
            if self.held + len(data) > self.limit:
                self._by_id.clear()
                self.held = 0
            self._by_id[id(data)] = (data, digest)
            self.held += len(data)
        return digest


def _put(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    if len(cache) > _CACHE:
        cache.popitem(last=False)
