"""Raft ordering (``fabric up --consensus raft``) keeps working beside the default SmartBFT: one smoke test
on its own network of three Raft orderers of one organisation, the service anchoring on every channel and
every block checked offline under a trust file of Raft config blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from receipt_service.config import load_settings
from receipt_service.fabric.network import CHANNELS, Network
from receipt_service.server import fabric_client
from receipt_verifier.fabric.trust import make_trust

from ..procs import collect, create_key, load
from .conftest import _free_base
from .test_anchoring import _check_on_chain, _serve


@pytest.fixture(scope="module")
def raft_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(tmp_path_factory.mktemp("raft") / "net", _free_base(), "raft")
    try:
        net.up(progress=print)
        yield net
    finally:
        net.down()


async def test_raft_orders_and_every_anchor_checks_offline(raft_net: Network, tmp_path: Path) -> None:
    lay = raft_net.layout
    assert lay.consensus == "raft" and [o.org for o in lay.orderers] == ["Orderer"] * 3
    status = raft_net.status()
    assert status.healthy and status.consensus == "raft" and set(status.leaders) == set(CHANNELS)
    trust = make_trust(raft_net.config_blocks().values())
    for channel in trust["channels"].values():  # one orderer organisation, any of its orderers signs a block
        assert channel["block_validation_policy"] == "ANY Writers of [OR('OrdererMSP.member')]"
        assert "consenters" not in channel and "quorum" not in channel
    with pytest.raises(Exception, match="was set up with raft ordering, not bft"):
        Network(lay.root, consensus="bft")

    settings = load_settings(lay.root / "receipt-service.toml", environ={})
    assert settings.fabric is not None
    gateway = fabric_client(settings.fabric)
    data = tmp_path / "data"
    token = create_key(data)
    acked: dict[str, str] = {}
    try:
        with _serve(raft_net, data) as (_, base):
            assert await load(base, token, acked, stop_after=1.0, workers=2, max_batch=10) > 0
            receipts = await collect(base, token, list(acked), timeout=60)
        await _check_on_chain(gateway, acked, receipts, raft_net)  # with the chain monitor over Raft blocks
    finally:
        await gateway.close()
