"""The anchor chaincode's arguments through the real network and our Gateway client."""

from __future__ import annotations

import json
import os

import pytest

from receipt_service.fabric.gateway import GatewayClient, GatewayError

from .chainlane import ChainLane

CHANNEL = "personal-health"


def _args(**change: str) -> list[str]:
    """Valid ``AppendWindow`` arguments of a new lane's first window, with ``change`` applied by name."""
    names = ["lane", "seq", "prev", "window_id", "start", "end", "trees", "heads_root", "heads_size", "proof"]
    args = ChainLane().args({})
    for name, value in change.items():
        args[names.index(name)] = value
    return args


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lane": "bad lane!"}, "lane"),
        ({"seq": "one"}, "seq"),
        ({"prev": "A" * 64}, "prev"),
        ({"window_id": "bad id!"}, "windowId"),
        ({"start": "yesterday"}, "windowStart"),
        ({"end": "2020-01-01T00:00:00.000000Z"}, "before windowStart"),
        ({"trees": "[{}]"}, r"trees\[0\] must hold index, root and size"),
        ({"trees": json.dumps([{"index": 1, "root": "a" * 64, "size": 1}])}, "indexed 0..n-1"),
        ({"heads_root": "B" * 64}, "headsRoot"),
        ({"heads_size": "0"}, "headsSize"),
        ({"proof": "{"}, "proof"),
        ({"seq": "1"}, "sequence"),
    ],
)
async def test_bad_arguments_are_refused_with_the_reason(
    gateway: GatewayClient, change: dict[str, str], reason: str
) -> None:
    with pytest.raises(GatewayError, match=reason) as err:
        await gateway.submit(CHANNEL, "anchor", "AppendWindow", _args(**change))
    assert err.value.code == "ABORTED"


async def test_argument_counts_and_unknown_functions_are_named(gateway: GatewayClient) -> None:
    with pytest.raises(GatewayError, match="AppendWindow takes 10 argument"):
        await gateway.submit(CHANNEL, "anchor", "AppendWindow", ["_"])
    with pytest.raises(GatewayError, match="unknown function"):
        await gateway.submit(CHANNEL, "anchor", "Rewrite", [])
    with pytest.raises(GatewayError, match="is not anchored"):
        await gateway.evaluate(CHANNEL, "anchor", "GetAnchor", [f"never-{os.urandom(4).hex()}/0"])
    with pytest.raises(GatewayError, match="has no chained window"):
        await gateway.evaluate(CHANNEL, "anchor", "GetTip", [f"never-{os.urandom(4).hex()}"])


async def test_a_tree_key_is_written_once(gateway: GatewayClient) -> None:
    first, second = ChainLane(), ChainLane()
    args = first.args({})
    done = await gateway.submit(CHANNEL, "anchor", "AppendWindow", args)
    first.accept(done.result, {})
    taken = second.args({})
    taken[3] = args[3]  # another lane's window under the same id: its tree key exists
    with pytest.raises(GatewayError, match="is already anchored"):
        await gateway.submit(CHANNEL, "anchor", "AppendWindow", taken)
