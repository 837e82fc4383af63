"""Evidence for Fabric anchors: blocks fetched from a peer's Deliver service once, then kept in the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from receipt_verifier.errors import FabricEvidenceError
from receipt_verifier.fabric.trust import last_config_index
from receipt_verifier.model import FabricAnchor

from ..errors import AnchorBackendError, NotFoundError
from ..stores.base import Store
from .gateway import GatewayClient, GatewayError

log = logging.getLogger("receipt_service.fabric.evidence")


class BlockCache:
    """Blocks by (channel, number): from the store, else from a peer (and then stored for good)."""

    def __init__(self, store: Store, client: GatewayClient, channels: Iterable[str]) -> None:
        self.store = store
        self.client = client
        self.channels = frozenset(channels)

    async def block(self, channel: str, number: int) -> bytes:
        """The block exactly as the peer stores it; ``NotFoundError`` for an unknown channel or block."""
        if channel not in self.channels:
            raise NotFoundError(f"channel {channel!r} is not one this service anchors to")
        data = await self.store.get_fabric_block(channel, number)
        if data is not None:
            return data
        try:
            data = await self.client.fetch_block(channel, number)
        except GatewayError as exc:
            if "NOT_FOUND" in str(exc):
                raise NotFoundError(f"channel {channel} has no block {number} yet") from None
            raise AnchorBackendError(f"fetching block {number} of {channel}: {exc}") from None
        await self.store.put_fabric_block(channel, number, data)
        return data

    async def evidence(self, anchors: Iterable[FabricAnchor]) -> list[tuple[str, int, bytes]]:
        """Each anchor's block and the config block it was made under."""
        out: dict[tuple[str, int], bytes] = {}
        for a in anchors:
            if (a.channel, a.block_number) in out:
                continue
            data = await self.block(a.channel, a.block_number)
            out[(a.channel, a.block_number)] = data
            try:
                config = last_config_index(data)
            except FabricEvidenceError as exc:
                raise AnchorBackendError(f"block {a.block_number} of {a.channel} is not usable: {exc}") from None
            if (a.channel, config) not in out:
                out[(a.channel, config)] = await self.block(a.channel, config)
        return [(ch, n, data) for (ch, n), data in out.items()]

    async def prefetch(self, anchor: FabricAnchor) -> None:
        """Keep a new anchor's evidence now, while the peer surely has it (failures only logged)."""
        try:
            await self.evidence([anchor])
        except (AnchorBackendError, NotFoundError) as exc:
            log.warning("evidence for %s not kept yet (fetched on demand later): %s", anchor.anchor_id, exc)
