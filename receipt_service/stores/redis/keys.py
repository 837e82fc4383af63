"""What every part of ``RedisStore`` shares: the lane's keys, its link, its lease, and calls that turn Redis
errors into the service's."""

from __future__ import annotations

from typing import Any

from .link import RedisLink, redis_errors

V1_LANE = "v1"  # the lane of keys without a role
REGISTRY = "{hr}:clock-registry"  # clock sequence -> lane, across lanes (proof ids name their lane)


class LaneKeys:
    """A lane's keys on the shared link, and the lease this instance holds on it."""

    link: RedisLink
    lane: str
    channel: str
    _lease: str | None

    def k(self, name: str) -> str:
        """A key of this lane (one hash slot per lane)."""
        return f"{{hr:{self.lane}}}:{name}"

    @property
    def fence(self) -> int | None:
        """The fencing token of this instance's leader lease (None: not leading)."""
        return None if self._lease is None else int(self._lease.rsplit(":", 1)[1])

    async def _call(self, name: str, *args: Any) -> Any:
        with redis_errors():
            return await getattr(self.link.client, name)(*args)
