"""The Fabric trust file: each channel's config block, pinned once, and what it says.

The file holds every pinned config block whole (base64) with its header hash; the organisations,
their root certificates and the policies are derived from the block on every load and compared with
the readable summary stored beside it, so no edit of the file goes unnoticed. Because a genesis
block carries no signatures, pinning its header hash (out of band) is what makes it trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fabric_protos.common import configuration_pb2, policies_pb2
from fabric_protos.msp import identities_pb2, msp_config_pb2
from fabric_protos.orderer import configuration_pb2 as orderer_config_pb2
from google.protobuf.message import DecodeError

from .. import strict_json
from ..errors import FabricEvidenceError, TrustFileError
from . import policy as pol
from .blocks import Block, config_of, orderer_metadata, parse_block
from .msp import MSPs, OrgMSP

TRUST_TYPE = "HealthReceiptFabricTrust"
TRUST_VERSION = 1
ENDORSEMENT_PATH = "/Channel/Application/Endorsement"
BLOCK_VALIDATION_PATH = "/Channel/Orderer/BlockValidation"


@dataclass(frozen=True)
class Consenter:
    """A BFT consenter as the config maps it: the numeric id its block signatures name, and its identity."""

    id: int
    msp_id: str
    host: str
    port: int
    serialized: bytes  # SerializedIdentity{msp_id, identity}: what its signatures are checked under
    identity_sha256: str


@dataclass(frozen=True)
class ChannelTrust:
    """One channel as pinned: its config block and everything verification takes from it."""

    channel: str
    config_block_number: int
    config_block_hash: str
    orgs: dict[str, OrgMSP]
    orderer_orgs: tuple[str, ...]
    application_orgs: tuple[str, ...]
    block_validation: pol.Policy
    endorsement: pol.Policy
    consensus: str = "etcdraft"  # the orderer's ConsensusType: "etcdraft" or "BFT"
    consenters: tuple[Consenter, ...] = ()  # the consenter mapping (BFT; empty when the config has none)
    v3: bool = False  # the channel capability V3_0: Fabric then reads identifier-header signatures by id
    config_block_sha256: str = ""  # SHA-256 of the pinned block's bytes (an evidence copy must be the same)

    @property
    def bft(self) -> bool:
        """Whether blocks are ordered and signed by SmartBFT consenters."""
        return self.consensus == "BFT"

    def consenter(self, ident: int) -> Consenter | None:
        """The consenter with this numeric id (None: not in the mapping; Fabric ignores its signature)."""
        return next((c for c in self.consenters if c.id == ident), None)

    def summary(self) -> dict[str, Any]:
        """The readable part of the trust file for this channel."""
        out: dict[str, Any] = {
            "config_block_number": self.config_block_number,
            "config_block_hash": self.config_block_hash,
            "orderer_orgs": list(self.orderer_orgs),
            "application_orgs": list(self.application_orgs),
            "root_certs": {m: list(o.root_certs) for m, o in sorted(self.orgs.items())},
            "block_validation_policy": pol.describe(self.block_validation),
            "endorsement_policy": pol.describe(self.endorsement),
        }
        if self.bft:  # who signs blocks, and how many of them a block needs
            n = len(self.consenters)
            out["consensus"] = self.consensus
            out["consenters"] = [
                {"id": c.id, "msp_id": c.msp_id, "endpoint": f"{c.host}:{c.port}", "identity_sha256": c.identity_sha256}
                for c in self.consenters
            ]
            out["quorum"] = bft_quorum(n)
            out["tolerates"] = (n - 1) // 3
        return out

    def msps(self) -> MSPs:
        """An identity checker over this channel's organisations."""
        return MSPs(self.orgs)


def bft_quorum(n: int) -> int:
    """Distinct consenter signatures a BFT block needs: ceil((n + f + 1) / 2), f = (n - 1) // 3."""
    return -(-(n + (n - 1) // 3 + 1) // 2)


def _org(group: Any, name: str) -> OrgMSP:
    value = group.values.get("MSP")
    if value is None:
        raise TrustFileError(f"organisation {name} has no MSP value in the config")
    try:
        cfg = msp_config_pb2.FabricMSPConfig.FromString(msp_config_pb2.MSPConfig.FromString(value.value).config)
    except DecodeError:
        raise TrustFileError(f"organisation {name}: its MSP config does not parse") from None
    node_ous = None
    if cfg.HasField("fabric_node_ous") and cfg.fabric_node_ous.enable:
        n = cfg.fabric_node_ous
        node_ous = {
            role: str(getattr(n, f"{role}_ou_identifier").organizational_unit_identifier)
            for role in ("client", "peer", "admin", "orderer")
            if n.HasField(f"{role}_ou_identifier")
        }
    return OrgMSP(
        msp_id=str(cfg.name),
        root_certs=tuple(bytes(c).decode() for c in cfg.root_certs),
        intermediate_certs=tuple(bytes(c).decode() for c in cfg.intermediate_certs),
        admin_certs=tuple(bytes(c).decode() for c in cfg.admins),
        node_ous=node_ous,
    )


def _policy(group: Any, name: str, path: str) -> pol.Policy:
    """A group's policy by name, implicit-meta resolved over its sub-groups."""
    cp = group.policies.get(name)
    if cp is None:
        raise TrustFileError(f"the config has no policy {path}")
    kind = cp.policy.type
    if kind == policies_pb2.Policy.PolicyType.SIGNATURE:
        return pol.from_signature_envelope(cp.policy.value)
    if kind == policies_pb2.Policy.PolicyType.IMPLICIT_META:
        meta = policies_pb2.ImplicitMetaPolicy.FromString(cp.policy.value)
        rule = policies_pb2.ImplicitMetaPolicy.Rule.Name(meta.rule)
        subs = [
            _policy(g, meta.sub_policy, f"{path.rsplit('/', 1)[0]}/{org}/{meta.sub_policy}")
            for org, g in sorted(group.groups.items())
        ]
        return {"type": "implicit_meta", "rule": rule, "sub_policy": str(meta.sub_policy), "policies": subs}
    raise TrustFileError(f"{path}: policy type {kind} is not supported")


def channel_trust(block_bytes: bytes) -> ChannelTrust:
    """Everything an auditor pins, from one channel's genesis or config block."""
    try:
        block = parse_block(block_bytes)
        channel, config = config_of(block)
    except FabricEvidenceError as exc:
        raise TrustFileError(f"not a usable config block: {exc}") from None
    root = config.channel_group
    orderer, app = root.groups.get("Orderer"), root.groups.get("Application")
    if orderer is None or app is None:
        raise TrustFileError(f"channel {channel}: the config has no Orderer or no Application group")
    orgs: dict[str, OrgMSP] = {}
    members: list[tuple[str, ...]] = []
    for group in (orderer, app):
        found = [_org(g, name) for name, g in group.groups.items()]
        orgs.update((org.msp_id, org) for org in found)
        members.append(tuple(sorted(org.msp_id for org in found)))
    consensus, consenters = _consensus(orderer)
    block_validation = _policy(orderer, "BlockValidation", BLOCK_VALIDATION_PATH)
    if consensus == "BFT" and block_validation != bft_policy(consenters):
        raise TrustFileError(
            f"channel {channel}: the BFT block validation policy is not the quorum of the consenter mapping"
            f" (Fabric's orderers require OutOf({bft_quorum(len(consenters))}) over the {len(consenters)} consenters)"
        )
    return ChannelTrust(
        channel=channel,
        config_block_number=block.number,
        config_block_hash=block.header_hash,
        orgs=orgs,
        orderer_orgs=members[0],
        application_orgs=members[1],
        block_validation=block_validation,
        endorsement=_policy(app, "Endorsement", ENDORSEMENT_PATH),
        consensus=consensus,
        consenters=consenters,
        v3=_capability(root, "V3_0"),
        config_block_sha256=hashlib.sha256(block_bytes).hexdigest(),
    )


def bft_policy(consenters: tuple[Consenter, ...]) -> pol.Policy:
    """The block validation policy Fabric's BFT orderers require of a consenter mapping (configtxgen
    writes it; ``orderer/consensus/smartbft/configverifier.go`` refuses any other)."""
    return {
        "type": "signature",
        "rule": {
            "n_out_of": {"n": bft_quorum(len(consenters)), "rules": [{"signed_by": i} for i in range(len(consenters))]}
        },
        "principals": [{"msp_id": c.msp_id, "identity_sha256": c.identity_sha256} for c in consenters],
    }


def _capability(group: Any, name: str) -> bool:
    """Whether a config group's ``Capabilities`` value holds ``name``."""
    value = group.values.get("Capabilities")
    if value is None:
        return False
    try:
        return name in configuration_pb2.Capabilities.FromString(value.value).capabilities
    except DecodeError:
        raise TrustFileError("/Channel/Capabilities does not parse") from None


def _consensus(orderer: Any) -> tuple[str, tuple[Consenter, ...]]:
    """The orderer's consensus type and, for BFT, its consenter mapping."""
    value = orderer.values.get("ConsensusType")
    if value is None:
        raise TrustFileError("the config has no /Channel/Orderer/ConsensusType")
    try:
        kind = str(orderer_config_pb2.ConsensusType.FromString(value.value).type)
    except DecodeError:
        raise TrustFileError("/Channel/Orderer/ConsensusType does not parse") from None
    mapping = orderer.values.get("Orderers")
    if mapping is None:
        if kind == "BFT":
            raise TrustFileError("a BFT config has no /Channel/Orderer/Orderers (the consenter mapping)")
        return kind, ()
    try:
        found = configuration_pb2.Orderers.FromString(mapping.value).consenter_mapping
    except DecodeError:
        raise TrustFileError("/Channel/Orderer/Orderers does not parse") from None
    consenters = []
    for c in found:
        sid = identities_pb2.SerializedIdentity(mspid=c.msp_id, id_bytes=c.identity).SerializeToString()
        sha = pol.cert_sha256(bytes(c.identity))
        consenters.append(Consenter(int(c.id), str(c.msp_id), str(c.host), int(c.port), sid, sha))
    if len({c.id for c in consenters}) != len(consenters):
        raise TrustFileError("the consenter mapping names one id twice")
    if len({(c.msp_id, c.identity_sha256) for c in consenters}) != len(consenters):
        raise TrustFileError("the consenter mapping names one certificate twice")
    return kind, tuple(consenters)  # in the mapping's order, as the policy names them


def make_trust(blocks: Iterable[bytes]) -> dict[str, Any]:
    """The trust file for these config blocks (one per channel)."""
    channels: dict[str, Any] = {}
    for data in blocks:
        t = channel_trust(data)
        if t.channel in channels:
            raise TrustFileError(f"two config blocks for channel {t.channel}: pin one per channel")
        channels[t.channel] = {**t.summary(), "config_block": base64.b64encode(data).decode()}
    if not channels:
        raise TrustFileError("give at least one config block")
    return {"type": TRUST_TYPE, "version": TRUST_VERSION, "channels": dict(sorted(channels.items()))}


def load_trust(doc: bytes | str | Mapping[str, Any]) -> dict[str, ChannelTrust]:
    """Read a trust file; every channel's summary must match what its config block says."""
    try:
        data = strict_json.loads(doc) if isinstance(doc, bytes | str) else doc
    except ValueError as exc:
        raise TrustFileError(f"the trust file is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != TRUST_TYPE or data.get("version") != TRUST_VERSION:
        raise TrustFileError(f"not a trust file: expected type {TRUST_TYPE} version {TRUST_VERSION}")
    channels = data.get("channels")
    if not isinstance(channels, dict) or not channels:
        raise TrustFileError("the trust file lists no channels")
    out = {}
    for name, entry in channels.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("config_block"), str):
            raise TrustFileError(f"channel {name}: no config_block in the trust file")
        try:
            raw = base64.b64decode(entry["config_block"], validate=True)
        except (binascii.Error, ValueError):
            raise TrustFileError(f"channel {name}: config_block is not base64") from None
        t = channel_trust(raw)
        if t.channel != name:
            raise TrustFileError(f"the config block under {name} is for channel {t.channel}")
        summary = {k: v for k, v in entry.items() if k != "config_block"}
        if summary != t.summary():
            changed = sorted(k for k in set(summary) | set(t.summary()) if summary.get(k) != t.summary().get(k))
            raise TrustFileError(f"channel {name}: {', '.join(changed)} in the trust file differ from its config block")
        out[name] = t
    return out


def last_config_index(block_bytes: bytes) -> int:
    """The config block a block was made under (from its orderer-signed metadata)."""
    block: Block = parse_block(block_bytes)
    return orderer_metadata(block)[1]
