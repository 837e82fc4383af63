"""The shared store: Redis (or a Redis Cluster), so several service instances serve one data set.

Every key of a lane carries the hash tag ``{hr:<lane>}``: a lane lives in one cluster slot, and each
multi-key write is one Lua script, applied, replicated and appended to the AOF as a whole. The server
must run with ``appendonly yes`` and ``appendfsync always`` (checked at start on every master), so a
reply to a write means the write is on disk; ``redis_wait_replicas`` adds a ``WAIT`` for replicas.

Several instances share a lane:

- each holds its own clock sequence under a lease, so their proof ids never collide; the add-batch
  script also refuses ticks at or below the clock's last ones, so even two instances on one clock
  (one paused past its lease) cannot issue the same id;
- one holds the lane's leader lease, whose value carries a fencing token bumped on every takeover;
  the commit script compares it, so a leader paused past its lease cannot commit a second tree set;
- commits and anchors are published on the lane's channel, which wakes long polls on every instance.

Modules: ``link`` (the shared connections, the scripts registered on them, Redis errors as the
service's), ``scripts`` (the Lua scripts), ``records`` (how records are encoded in Redis values and
checked when read back), ``keys`` (a lane's keys and lease), and ``store`` (``RedisStore``, with
``windows`` and ``access`` as its parts).
"""

from .link import RedisLink, RedisTarget, ScriptRefusedError
from .store import RedisStore, open_redis_stores

__all__ = ["RedisLink", "RedisStore", "RedisTarget", "ScriptRefusedError", "open_redis_stores"]
