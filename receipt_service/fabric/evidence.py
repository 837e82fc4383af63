"""Evidence for Fabric anchors: blocks fetched from a peer's Deliver service once, then kept in the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from receipt_verifier.errors import FabricEvidenceError
from receipt_verifier.fabric.trust import last_config_index
from receipt_verifier.fabric.windows import tip_reads
from receipt_verifier.model import FabricAnchor

from ..errors import AnchorBackendError, NotFoundError
from ..stores.base import Store
from .gateway import GatewayClient, GatewayError

log = logging.getLogger("receipt_service.fabric.evidence")

SUCCESSOR_SCAN_BLOCKS = 64  # blocks one history request looks at for a window's successor
SUCCESSOR_SCAN_SECONDS = 2.0  # and for how long at most (the next request goes on from there)
SUCCESSORS_KEPT = 4096  # anchors whose successor (or scan position) is remembered


def _keep(memo: dict[str, int], key: str, value: int) -> None:
    if len(memo) >= SUCCESSORS_KEPT and key not in memo:
        memo.clear()
    memo[key] = value


class BlockCache:
    """Blocks by (channel, number): from the store, else from a peer (and then stored for good)."""

    def __init__(self, store: Store, client: GatewayClient, channels: Iterable[str]) -> None:
        self.store = store
        self.client = client
        self.channels = frozenset(channels)
        self._successors: dict[str, int] = {}  # anchor tx id -> its successor's block (found once, never changes)
        self._scanned: dict[str, int] = {}  # anchor tx id -> the next block to look at for its successor

    async def block(self, channel: str, number: int) -> bytes:
        """The block exactly as the peer stores it; ``NotFoundError`` for an unknown channel or block."""
        if channel not in self.channels:
            raise NotFoundError(f"channel {channel!r} is not one this service anchors to")
        data = await self.store.get_fabric_block(channel, number)
        if data is not None:
            return data
        data = await self._fetch(channel, number)
        if data is None:
            raise NotFoundError(f"channel {channel} has no block {number} yet")
        await self.store.put_fabric_block(channel, number, data)
        return data

    async def _fetch(self, channel: str, number: int) -> bytes | None:
        """A block from the peer; None past the channel's height."""
        try:
            return await self.client.fetch_block(channel, number)
        except GatewayError as exc:
            if "NOT_FOUND" in str(exc):
                return None
            raise AnchorBackendError(f"fetching block {number} of {channel}: {exc}") from None

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

    async def successor(self, anchor: FabricAnchor) -> int | None:
        """The block of the transaction that read ``anchor``'s chained window as its lane's tip (its
        successor, which proves the window committed: spec §14.9); None when the lane has none yet or the
        anchor is not chained. The peer's word decides here (a successor its flags call VALID); the
        verifier checks what it is given. A scan looks at ``SUCCESSOR_SCAN_BLOCKS`` blocks at most, for
        ``SUCCESSOR_SCAN_SECONDS`` at most, and the next one goes on where it stopped (in this process)."""
        key = anchor.tx_id
        if key in self._successors:
            return self._successors[key]
        first = await self.block(anchor.channel, anchor.block_number)
        mine = next((r for r in tip_reads(first, anchor.chaincode) if r.tx_id == key), None)
        if mine is None or mine.tip is None:
            return None
        at = (anchor.block_number, mine.index)
        start = self._scanned.get(key, anchor.block_number)
        stop = start + SUCCESSOR_SCAN_BLOCKS
        deadline = time.monotonic() + SUCCESSOR_SCAN_SECONDS
        number = start
        while number < stop and time.monotonic() < deadline:
            data = first if number == anchor.block_number else await self._peek(anchor.channel, number)
            if data is None:
                break  # past the channel's height: no successor yet
            found = tip_reads(data, anchor.chaincode)
            if any(r.valid and r.tip is not None and r.lane == mine.lane and r.read == at for r in found):
                await self.store.put_fabric_block(anchor.channel, number, data)  # kept: evidence from now on
                _keep(self._successors, key, number)
                self._scanned.pop(key, None)
                return number
            number += 1
        _keep(self._scanned, key, number)  # blocks never change: the next scan starts here
        return None

    async def _peek(self, channel: str, number: int) -> bytes | None:
        """A block from the store or the peer, not kept; None past the channel's height."""
        data = await self.store.get_fabric_block(channel, number)
        return data if data is not None else await self._fetch(channel, number)

    async def prefetch(self, anchor: FabricAnchor) -> None:
        """Keep a new anchor's evidence now, while the peer surely has it (failures only logged)."""
        try:
            await self.evidence([anchor])
        except (AnchorBackendError, NotFoundError) as exc:
            log.warning("evidence for %s not kept yet (fetched on demand later): %s", anchor.anchor_id, exc)
