"""Trust files and config blocks: each way a config block or a trust file can be unusable gets its exact
message; what a config block says (orgs, intermediate and admin certificates, NodeOUs, policies) is
what the trust carries. Config blocks are edited here as protobuf and their data hash recomputed, as a
careless or hostile operator could hand them over."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fabric_protos.common import common_pb2, configtx_pb2, policies_pb2
from fabric_protos.msp import msp_config_pb2

from receipt_verifier.errors import TrustFileError
from receipt_verifier.fabric import policy as pol
from receipt_verifier.fabric.blocks import _der_len, header_bytes
from receipt_verifier.fabric.trust import channel_trust, load_trust, make_trust
from tests.conftest import VECTORS

TRUST: dict[str, Any] = json.loads((VECTORS / "fabric" / "trust.json").read_text())
GENESIS = {ch: base64.b64decode(entry["config_block"]) for ch, entry in TRUST["channels"].items()}


def _edited(channel: str, edit: Callable[[Any], None], *, envelope: Callable[[Any], None] | None = None) -> bytes:
    """``channel``'s genesis block with its ``Config`` (or its first envelope's payload) changed, data hash redone."""
    block = common_pb2.Block.FromString(GENESIS[channel])
    env = common_pb2.Envelope.FromString(block.data.data[0])
    payload = common_pb2.Payload.FromString(env.payload)
    ce = configtx_pb2.ConfigEnvelope.FromString(payload.data)
    edit(ce.config)
    payload.data = ce.SerializeToString()
    if envelope is not None:
        envelope(payload)
    env.payload = payload.SerializeToString()
    block.data.data[0] = env.SerializeToString()
    return _rehash(block)


def _rehash(block: Any) -> bytes:
    block.header.data_hash = hashlib.sha256(b"".join(block.data.data)).digest()
    return bytes(block.SerializeToString())


def _msp(config: Any, org: str) -> Any:
    value = config.channel_group.groups["Application"].groups[org].values["MSP"]
    mc = msp_config_pb2.MSPConfig.FromString(value.value)
    return value, mc, msp_config_pb2.FabricMSPConfig.FromString(mc.config)


def _set_msp(org: str, change: Callable[[Any], None]) -> Callable[[Any], None]:
    def edit(config: Any) -> None:
        value, mc, cfg = _msp(config, org)
        change(cfg)
        mc.config = cfg.SerializeToString()
        value.value = mc.SerializeToString()

    return edit


def _two_envelopes(block_bytes: bytes) -> bytes:
    block = common_pb2.Block.FromString(block_bytes)
    block.data.data.append(block.data.data[0])
    return _rehash(block)


def _envelope_garbage(block_bytes: bytes) -> bytes:
    block = common_pb2.Block.FromString(block_bytes)
    block.data.data[0] = b"\xff\xff\xff"
    return _rehash(block)


def _drop(path: list[str], what: str, name: str) -> Callable[[Any], None]:
    def edit(config: Any) -> None:
        group = config.channel_group
        for p in path:
            group = group.groups[p]
        del getattr(group, what)[name]

    return edit


def _policy_type(config: Any) -> None:
    config.channel_group.groups["Application"].policies["Endorsement"].policy.type = policies_pb2.Policy.PolicyType.MSP


UNUSABLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "not a block": (
        lambda: b"\xff\xff\xff",
        "not a usable config block: the evidence is not a Fabric block (protobuf does not parse)",
    ),
    "two envelopes": (
        lambda: _two_envelopes(GENESIS["insurance"]),
        "not a usable config block: block 0 is not a config block (it has 2 envelopes)",
    ),
    "an envelope that does not parse": (
        lambda: _envelope_garbage(GENESIS["insurance"]),
        "not a usable config block: block 0: an envelope does not parse",
    ),
    "a config envelope that does not parse": (
        lambda: _edited("insurance", lambda c: None, envelope=lambda p: setattr(p, "data", b"\xff\xff\xff")),
        "not a usable config block: block 0: the config envelope does not parse",
    ),
    "no Application group": (
        lambda: _edited("insurance", _drop([], "groups", "Application")),
        "channel insurance: the config has no Orderer or no Application group",
    ),
    "no Orderer group": (
        lambda: _edited("insurance", _drop([], "groups", "Orderer")),
        "channel insurance: the config has no Orderer or no Application group",
    ),
    "an org without MSP": (
        lambda: _edited("insurance", _drop(["Application", "InsurersMSP"], "values", "MSP")),
        "organisation InsurersMSP has no MSP value in the config",
    ),
    "an MSP config that does not parse": (
        lambda: _edited(
            "insurance",
            lambda c: setattr(
                c.channel_group.groups["Application"].groups["HospitalsMSP"].values["MSP"], "value", b"\xff"
            ),
        ),
        "organisation HospitalsMSP: its MSP config does not parse",
    ),
    "no endorsement policy": (
        lambda: _edited("insurance", _drop(["Application"], "policies", "Endorsement")),
        "the config has no policy /Channel/Application/Endorsement",
    ),
    "no Writers policy in the orderer org": (
        lambda: _edited("insurance", _drop(["Orderer", "OrdererMSP"], "policies", "Writers")),
        "the config has no policy /Channel/Orderer/OrdererMSP/Writers",
    ),
    "an MSP-type policy": (
        lambda: _edited("insurance", _policy_type),
        "/Channel/Application/Endorsement: policy type 2 is not supported",
    ),
}


@pytest.mark.parametrize("name", list(UNUSABLE))
def test_an_unusable_config_block_is_named(name: str) -> None:
    make, message = UNUSABLE[name]
    with pytest.raises(TrustFileError) as err:
        make_trust([make()])
    assert str(err.value) == message


def test_make_trust_wants_one_config_block_per_channel() -> None:
    with pytest.raises(TrustFileError) as err:
        make_trust([])
    assert str(err.value) == "give at least one config block"
    with pytest.raises(TrustFileError) as err:
        make_trust([GENESIS["insurance"], GENESIS["insurance"]])
    assert str(err.value) == "two config blocks for channel insurance: pin one per channel"


def test_the_trust_carries_what_the_config_block_says() -> None:
    t = channel_trust(GENESIS["insurance"])
    assert (t.channel, t.config_block_number) == ("insurance", 0)
    assert t.config_block_hash == hashlib.sha256(_header_der(GENESIS["insurance"])).hexdigest()
    assert (t.orderer_orgs, t.application_orgs) == (("OrdererMSP",), ("HospitalsMSP", "InsurersMSP"))
    assert pol.describe(t.endorsement) == "AND('HospitalsMSP.peer', 'InsurersMSP.peer')"
    assert pol.describe(t.block_validation) == "ANY Writers of [OR('OrdererMSP.member')]"
    hospitals = t.orgs["HospitalsMSP"]
    assert hospitals.node_ous == {"client": "client", "peer": "peer", "admin": "admin", "orderer": "orderer"}
    assert (hospitals.intermediate_certs, hospitals.admin_certs) == ((), ())
    assert hospitals.root_certs == tuple(TRUST["channels"]["insurance"]["root_certs"]["HospitalsMSP"])


def _header_der(block_bytes: bytes) -> bytes:
    b = common_pb2.Block.FromString(block_bytes)
    return header_bytes(b.header.number, bytes(b.header.previous_hash), bytes(b.header.data_hash))


def test_intermediate_and_admin_certificates_and_disabled_node_ous_are_read() -> None:
    root = TRUST["channels"]["insurance"]["root_certs"]["InsurersMSP"][0].encode()

    def change(cfg: Any) -> None:
        cfg.intermediate_certs.append(root)  # any PEM: the trust file only carries it
        cfg.admins.append(root)
        cfg.fabric_node_ous.enable = False

    org = channel_trust(_edited("insurance", _set_msp("InsurersMSP", change))).orgs["InsurersMSP"]
    assert org.intermediate_certs == (root.decode(),)
    assert org.admin_certs == (root.decode(),)
    assert org.node_ous is None  # present but disabled: roles come from admin certificates only


# ---------------------------------------------------------------------- reading a trust file


def _entry(**changes: Any) -> dict[str, Any]:
    trust = copy.deepcopy(TRUST)
    trust["channels"]["insurance"].update(changes)
    return trust


BAD_FILES: dict[str, tuple[Any, str]] = {
    "not JSON": ("{", "the trust file is not JSON: "),
    "a list": ([], "not a trust file: expected type HealthReceiptFabricTrust version 1"),
    "another type": ({**TRUST, "type": "Other"}, "not a trust file: expected type HealthReceiptFabricTrust version 1"),
    "another version": ({**TRUST, "version": 2}, "not a trust file: expected type HealthReceiptFabricTrust version 1"),
    "no channels": ({**TRUST, "channels": {}}, "the trust file lists no channels"),
    "channels as a list": ({**TRUST, "channels": [1]}, "the trust file lists no channels"),
    "a channel that is not an object": (
        {**TRUST, "channels": {"insurance": "x"}},
        "channel insurance: no config_block in the trust file",
    ),
    "a channel without its block": (_entry(config_block=None), "channel insurance: no config_block in the trust file"),
    "a block that is not base64": (_entry(config_block="!!!!"), "channel insurance: config_block is not base64"),
    "a block of another channel": (
        {**TRUST, "channels": {"research": TRUST["channels"]["insurance"]}},
        "the config block under research is for channel insurance",
    ),
    "edited summaries": (
        _entry(endorsement_policy="OR('HospitalsMSP.peer')", application_orgs=["HospitalsMSP"], extra=1),
        "channel insurance: application_orgs, endorsement_policy, extra in the trust file differ from its config block",
    ),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_trust_file_is_named(name: str) -> None:
    doc, message = BAD_FILES[name]
    with pytest.raises(TrustFileError) as err:
        load_trust(doc if isinstance(doc, str) else json.dumps(doc))
    assert str(err.value).startswith(message) if name == "not JSON" else str(err.value) == message


def test_a_trust_file_is_read_from_text_bytes_or_a_mapping_alike() -> None:
    text = json.dumps(TRUST)
    loaded = [load_trust(doc) for doc in (text, text.encode(), TRUST)]
    assert [sorted(x) for x in loaded] == [sorted(TRUST["channels"])] * 3
    assert loaded[0]["insurance"].summary() == loaded[1]["insurance"].summary() == loaded[2]["insurance"].summary()


# ---------------------------------------------------------------------- DER block headers


@pytest.mark.parametrize(
    ("n", "der"),
    [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"), (65535, "82ffff"), (65536, "83010000")],
)
def test_der_lengths_switch_to_the_long_form_at_128(n: int, der: str) -> None:
    assert _der_len(n).hex() == der


@pytest.mark.parametrize(
    ("number", "integer"), [(0, "020100"), (127, "02017f"), (128, "02020080"), (255, "020200ff"), (256, "02020100")]
)
def test_block_numbers_are_der_integers_with_a_sign_bit(number: int, integer: str) -> None:
    der = header_bytes(number, b"", b"").hex()
    assert der.startswith("30") and der[4:].startswith(integer)
