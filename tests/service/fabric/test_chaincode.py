"""The anchor chaincode through the real network and our Gateway client."""

from __future__ import annotations

import json
import os

import pytest

from receipt_service.fabric.gateway import GatewayClient, GatewayError, TransactionInvalidError

START, END = "2026-11-21T10:00:00.000000Z", "2026-11-21T10:00:01.000000Z"


def _args(key: str, root: str, size: int = 4) -> list[str]:
    return [key, root, str(size), START, END]


async def test_write_once_idempotent_and_conflicting_root_refused(gateway: GatewayClient) -> None:
    key, root = f"test-{os.urandom(4).hex()}/0", os.urandom(32).hex()
    first = await gateway.submit("insurance", "anchor", "AnchorRoot", _args(key, root))
    record = json.loads(first.result)
    assert record["tx_id"] == first.tx_id and record["root"] == root and first.block_number > 0

    again = await gateway.submit("insurance", "anchor", "AnchorRoot", _args(key, root))
    assert again.tx_id != first.tx_id
    assert json.loads(again.result)["tx_id"] == first.tx_id, "a repeat must answer the original write"

    with pytest.raises(GatewayError, match="already anchored with root " + root) as err:
        await gateway.submit("insurance", "anchor", "AnchorRoot", _args(key, os.urandom(32).hex()))
    assert err.value.code == "ABORTED"
    with pytest.raises(GatewayError, match="already anchored"):
        await gateway.submit("insurance", "anchor", "AnchorRoot", _args(key, root, size=5))

    stored = json.loads(await gateway.evaluate("insurance", "anchor", "GetAnchor", [key]))
    assert stored == record
    by_root = json.loads(await gateway.evaluate("insurance", "anchor", "GetAnchorByRoot", [root]))
    assert by_root == record
    with pytest.raises(GatewayError, match="is not anchored"):  # other channels never saw this key
        await gateway.evaluate("personal-health", "anchor", "GetAnchor", [key])


async def test_one_org_alone_cannot_write_an_anchor(gateway: GatewayClient) -> None:
    key, root = f"test-{os.urandom(4).hex()}/0", os.urandom(32).hex()
    for org in ("HospitalsMSP", "InsurersMSP"):
        with pytest.raises(TransactionInvalidError, match="ENDORSEMENT_POLICY_FAILURE"):
            await gateway.submit("medical-history", "anchor", "AnchorRoot", _args(key, root), endorsing_orgs=[org])
    with pytest.raises(GatewayError, match="is not anchored"):
        await gateway.evaluate("medical-history", "anchor", "GetAnchor", [key])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["bad key!", "a" * 64, "1", START, END], "key"),
        (["k/0", "A" * 64, "1", START, END], "root"),
        (["k/0", "a" * 64, "0", START, END], "treeSize"),
        (["k/0", "a" * 64, "1", "yesterday", END], "windowStart"),
        (["k/0", "a" * 64, "1", END, START], "before windowStart"),
        (["k/0"], "takes 5 argument"),
    ],
)
async def test_bad_arguments_are_refused_with_the_reason(gateway: GatewayClient, args: list[str], reason: str) -> None:
    with pytest.raises(GatewayError, match=reason):
        await gateway.submit("personal-health", "anchor", "AnchorRoot", args)
