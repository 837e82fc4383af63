"""SmartBFT cases: blocks resealed with exactly chosen consenter signatures, against the quorum."""

from __future__ import annotations

from typing import Any

from fabric_protos.common import common_pb2

from receipt_verifier.fabric.blocks import header_bytes
from tests.fabric_forge import Forger

from .blocks import Case, flip


def _bft_signed(plan: list[tuple[str, int, int]]) -> Case:
    """Reseal with exactly these signatures, in order: (style, id, signer), where style is ``bft`` (an
    identifier header naming ``id``), ``raft`` (a signature header naming the signer), ``forged`` (a
    bft signature whose bytes are flipped) or ``garbled`` (an identifier header that does not parse);
    ``signer`` indexes the forger's orderers, -1 the Hospitals peer."""

    def case(block: Any, f: Forger, a: dict[str, Any]) -> bytes:
        f.reseal(block)
        md = common_pb2.Metadata.FromString(block.metadata.metadata[0])
        del md.signatures[:]
        h = block.header
        der = header_bytes(h.number, bytes(h.previous_hash), bytes(h.data_hash))
        for style, ident, who in plan:
            signer = f.peers["Hospitals"] if who < 0 else f.orderers[who]
            if style == "raft":
                sh = common_pb2.SignatureHeader(creator=signer.serialized, nonce=b"r" * 24).SerializeToString()
                md.signatures.add(signature_header=sh, signature=signer.sign(bytes(md.value) + sh + der))
                continue
            if style == "garbled":
                md.signatures.add(identifier_header=b"\xff", signature=signer.sign(bytes(md.value) + der))
                continue
            Forger.consenter_sign(md, der, ident, signer)
            if style == "forged":
                md.signatures[-1].signature = flip(md.signatures[-1].signature, 10)
        block.metadata.metadata[0] = md.SerializeToString()
        return bytes(block.SerializeToString())

    return case


# name -> (case, reason template); templates name the forger's orderers as {c0}..{c3} (consenters 1..4).
# A reason that starts with "block" is a valid anchor's; the others are refusals.
REFUSED = "OrdererSignatureError: block {n}: orderer signatures do not satisfy {block_policy} ({detail})"
BELOW = "2 distinct consenter(s) signed, the quorum is 3"
BFT_CASES: dict[str, tuple[Case, str]] = {
    "one consenter's signature forged, the other three a quorum": (
        _bft_signed([("bft", 1, 0), ("forged", 2, 1), ("bft", 3, 2), ("bft", 4, 3)]),
        "block {n} of insurance signed by {c0}, {c2}, {c3}; tx endorsed by {endorsers}",
    ),
    "a quorum and one identifier header that does not parse": (  # Fabric refuses the whole block
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 3, 2), ("garbled", 4, 3)]),
        "OrdererSignatureError: block {n}: an orderer identifier header does not parse",
    ),
    "signatures below the quorum": (_bft_signed([("bft", 1, 0), ("bft", 2, 1)]), REFUSED.replace("{detail}", BELOW)),
    "one consenter counted twice": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 2, 1)]),
        REFUSED.replace("{detail}", BELOW),
    ),
    "a third signature under an id not in the mapping": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 9, 2)]),
        REFUSED.replace("{detail}", BELOW + "; a signature names consenter id 9, not in the consenter mapping"),
    ),
    "a consenter's key signing under another consenter's id": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("bft", 4, 2)]),
        REFUSED.replace("{detail}", BELOW + "; orderer: the signature by {c3} does not verify"),
    ),
    "a Raft-style signature header by a consenter (Fabric counts it)": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("raft", 0, 2)]),
        "block {n} of insurance signed by {c0}, {c1}, {c2}; tx endorsed by {endorsers}",
    ),
    "a Raft-style signature header by a peer": (
        _bft_signed([("bft", 1, 0), ("bft", 2, 1), ("raft", 0, -1)]),
        REFUSED.replace("{detail}", BELOW + "; signer's MSP 'HospitalsMSP' is not a pinned organisation allowed here"),
    ),
}
