"""One real Fabric network for the session (4 SmartBFT orderers of 4 organisations, 2 peers, 3 channels,
the anchor chaincode); test_raft.py brings up its own Raft network.

Fabric's programs are built from ../shared/fabric (or the cache) by ``fabric up`` itself; nothing
here is skipped: without Go or the source, the fixture fails with the reason.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from receipt_service.config import load_settings
from receipt_service.fabric.gateway import GatewayClient
from receipt_service.fabric.network import Network, free_base_port
from receipt_service.server import fabric_client


def _free_base(start: int = 27050) -> int:
    """A base port whose ports are all free (the network takes base .. base+PORT_SPAN-1)."""
    return free_base_port(start)


@pytest.fixture(scope="session")
def fabric_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(tmp_path_factory.mktemp("fabric") / "net", _free_base())
    try:
        net.up(progress=print)
        yield net
    finally:
        net.down()


@pytest.fixture
def net(fabric_net: Network) -> Iterator[Network]:
    """The session network, healthy before the test and brought back up after it (tests stop nodes)."""
    if any(fabric_net.pid(n) is None for n in fabric_net.layout.nodes):
        fabric_net.up()
    yield fabric_net
    if any(fabric_net.pid(n) is None for n in fabric_net.layout.nodes):
        fabric_net.up()


def service_config(net: Network, tmp_path: Path, **service: object) -> Path:
    """The TOML ``fabric up`` wrote, with extra service settings in front."""
    head = "".join(f"{k} = {v!r}\n" for k, v in service.items())
    path = tmp_path / "service.toml"
    # each service chains its own lanes: the tests share one network, as deployments may share a channel
    prefix = f'chain_prefix = "t{os.urandom(4).hex()}"\n'
    text = (net.layout.root / "receipt-service.toml").read_text().replace("[fabric]\n", "[fabric]\n" + prefix, 1)
    path.write_text(head + text)
    return path


@pytest.fixture
async def gateway(net: Network) -> AsyncIterator[GatewayClient]:
    settings = load_settings(net.layout.root / "receipt-service.toml", environ={})
    assert settings.fabric is not None
    client = fabric_client(settings.fabric)
    yield client
    await client.close()
