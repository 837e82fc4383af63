"""Fabric block structure: parsing, the DER header hash, the data hash, and config-block contents."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from fabric_protos.common import common_pb2, configtx_pb2
from google.protobuf.message import DecodeError

from ..errors import BlockFormatError, DataHashError

SIGNATURES, LAST_CONFIG, TRANSACTIONS_FILTER = 0, 1, 2
CONFIG, ENDORSER_TRANSACTION = 1, 3


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def header_bytes(number: int, previous_hash: bytes, data_hash: bytes) -> bytes:
    """ASN.1 DER ``SEQUENCE {INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash}``."""
    raw = number.to_bytes(max(1, (number.bit_length() + 8) // 8), "big")  # room for a 0 sign bit
    return _der(0x30, _der(0x02, raw) + _der(0x04, previous_hash) + _der(0x04, data_hash))


@dataclass(frozen=True)
class Block:
    """A parsed block with what verification needs."""

    number: int
    previous_hash: bytes
    data_hash: bytes
    envelopes: tuple[bytes, ...]
    metadata: tuple[bytes, ...]

    @functools.cached_property
    def header_der(self) -> bytes:
        """The bytes orderers sign and the next block's previous_hash covers (made once)."""
        return header_bytes(self.number, self.previous_hash, self.data_hash)

    @functools.cached_property
    def header_hash(self) -> str:
        """SHA-256 of the DER header, hex (made once: every anchor checked in this block asks for it)."""
        return hashlib.sha256(self.header_der).hexdigest()


def parse_block(data: bytes) -> Block:
    """Parse block bytes and check that the header's data hash covers every envelope."""
    try:
        b = common_pb2.Block.FromString(data)
    except DecodeError:
        raise BlockFormatError("the evidence is not a Fabric block (protobuf does not parse)") from None
    if not b.HasField("header") or not b.HasField("data"):
        raise BlockFormatError("the block has no header or no data")
    envelopes = tuple(bytes(e) for e in b.data.data)
    block = Block(
        int(b.header.number),
        bytes(b.header.previous_hash),
        bytes(b.header.data_hash),
        envelopes,
        tuple(bytes(m) for m in b.metadata.metadata),
    )
    if hashlib.sha256(b"".join(envelopes)).digest() != block.data_hash:
        raise DataHashError(
            f"block {block.number}: the header's data hash does not match its {len(envelopes)} envelopes"
        )
    return block


def envelope_payload(raw: bytes, where: str) -> tuple[Any, Any, Any, Any]:
    """(envelope, payload, channel header, signature header) of one envelope."""
    try:
        env = common_pb2.Envelope.FromString(raw)
        payload = common_pb2.Payload.FromString(env.payload)
        ch = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        sh = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    except DecodeError:
        raise BlockFormatError(f"{where}: an envelope does not parse") from None
    return env, payload, ch, sh


def orderer_metadata(block: Block) -> tuple[Any, int]:
    """(the SIGNATURES ``Metadata``, the last-config index it signs)."""
    if len(block.metadata) <= SIGNATURES:
        raise BlockFormatError(f"block {block.number} has no signature metadata")
    try:
        md = common_pb2.Metadata.FromString(block.metadata[SIGNATURES])
        obm = common_pb2.OrdererBlockMetadata.FromString(md.value)
    except DecodeError:
        raise BlockFormatError(f"block {block.number}: the signature metadata does not parse") from None
    return md, int(obm.last_config.index)


def config_of(block: Block) -> tuple[str, Any]:
    """(channel id, ``Config``) of a config block."""
    if len(block.envelopes) != 1:
        raise BlockFormatError(f"block {block.number} is not a config block (it has {len(block.envelopes)} envelopes)")
    _, payload, ch, _ = envelope_payload(block.envelopes[0], f"block {block.number}")
    if ch.type != CONFIG:
        raise BlockFormatError(f"block {block.number} is not a config block (header type {ch.type})")
    try:
        env = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    except DecodeError:
        raise BlockFormatError(f"block {block.number}: the config envelope does not parse") from None
    return str(ch.channel_id), env.config
