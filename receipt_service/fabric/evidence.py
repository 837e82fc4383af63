"""Evidence for Fabric anchors: blocks fetched from a peer's Deliver service once, then kept in the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from receipt_verifier.errors import FabricEvidenceError
from receipt_verifier.fabric.trust import last_config_index
from receipt_verifier.fabric.windows import tip_reads
from receipt_verifier.model import FabricAnchor

from ..errors import AnchorBackendError, NotFoundError
from ..stores.base import Store
from .gateway import GatewayClient, GatewayError

log = logging.getLogger("receipt_service.fabric.evidence")

SUCCESSOR_SCAN_BLOCKS = 64  # how far past a window's block its successor is looked for
SUCCESSORS_KEPT = 4096


class BlockCache:
    """Blocks by (channel, number): from the store, else from a peer (and then stored for good)."""

    def __init__(self, store: Store, client: GatewayClient, channels: Iterable[str]) -> None:
        self.store = store
        self.client = client
        self.channels = frozenset(channels)
        self._successors: dict[str, int] = {}  # anchor tx id -> its successor's block (found once, never changes)

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

    async def evidence(
        self, anchors: Iterable[FabricAnchor], more: Iterable[tuple[str, int]] = ()
    ) -> list[tuple[str, int, bytes]]:
        """Each anchor's block (and each of ``more``, (channel, number)) with the config block it was made under."""
        out: dict[tuple[str, int], bytes] = {}
        for channel, number in [*((a.channel, a.block_number) for a in anchors), *more]:
            if (channel, number) in out:
                continue
            data = await self.block(channel, number)
            out[(channel, number)] = data
            try:
                config = last_config_index(data)
            except FabricEvidenceError as exc:
                raise AnchorBackendError(f"block {number} of {channel} is not usable: {exc}") from None
            if (channel, config) not in out:
                out[(channel, config)] = await self.block(channel, config)
        return [(ch, n, data) for (ch, n), data in out.items()]

    async def successor(self, anchor: FabricAnchor, limit: int = SUCCESSOR_SCAN_BLOCKS) -> int | None:
        """The block of the transaction that read ``anchor``'s chained window as its lane's tip (its
        successor, which proves the window committed: spec §14.9), scanning up to ``limit`` blocks on
        from the anchor's; None when the lane has none there yet or the anchor is not chained."""
        found = self._successors.get(anchor.tx_id)
        if found is not None:
            return found
        first = await self.block(anchor.channel, anchor.block_number)
        mine = next((r for r in tip_reads(first, anchor.chaincode) if r.tx_id == anchor.tx_id), None)
        if mine is None:
            return None
        at = (anchor.block_number, mine.index)
        for number in range(anchor.block_number, anchor.block_number + limit):
            data = first if number == anchor.block_number else await self._peek(anchor.channel, number)
            if data is None:
                return None  # past the channel's height: no successor yet
            if any(r.appends and r.lane == mine.lane and r.read == at for r in tip_reads(data, anchor.chaincode)):
                await self.block(anchor.channel, number)  # kept: it is evidence from now on
                if len(self._successors) >= SUCCESSORS_KEPT:
                    self._successors.clear()
                self._successors[anchor.tx_id] = number
                return number
        return None

    async def _peek(self, channel: str, number: int) -> bytes | None:
        """A block from the store or the peer, not kept; None past the channel's height."""
        data = await self.store.get_fabric_block(channel, number)
        if data is not None:
            return data
        try:
            return await self.client.fetch_block(channel, number)
        except GatewayError as exc:
            if "NOT_FOUND" in str(exc):
                return None
            raise AnchorBackendError(f"fetching block {number} of {channel}: {exc}") from None

    async def prefetch(self, anchor: FabricAnchor) -> None:
        """Keep a new anchor's evidence now, while the peer surely has it (failures only logged)."""
        try:
            await self.evidence([anchor])
        except (AnchorBackendError, NotFoundError) as exc:
            log.warning("evidence for %s not kept yet (fetched on demand later): %s", anchor.anchor_id, exc)
