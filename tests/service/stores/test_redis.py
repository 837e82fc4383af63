"""The Redis store's own guarantees, on real redis-server processes: leases, fencing, clocks, wake-ups, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_service.anchors.redis_ledger import RedisLedger
from receipt_service.config import Settings, load_settings
from receipt_service.errors import ConfigError, LeaseLostError, StoreError, TicksTakenError
from receipt_service.ids import ProofIdIssuer
from receipt_service.ledger import TreeRoot
from receipt_service.stores.base import Batch
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.trees import build_packed
from receipt_service.windows import tree_records
from receipt_verifier.errors import LedgerError
from receipt_verifier.ledger import verify_chain

from .. import procs
from ..procs import CLI
from ..redisproc import RedisServer

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"


def _batch(issuer: ProofIdIssuer, n: int, at_ns: int = 1_763_712_000_000_000_000) -> Batch:
    hashes = [os.urandom(32) for _ in range(n)]
    issued = issuer.issue_batch(hashes, at_ns)
    return Batch("t", issued.first_ticks, issued.proof_id_bytes, b"".join(hashes), os.urandom(16 * n))


def _link(url: str) -> RedisLink:
    return RedisLink(RedisTarget.parse(url))


async def test_store_urls_are_checked() -> None:
    assert RedisTarget.parse("redis+cluster://10.0.0.1:7000") == RedisTarget("redis://10.0.0.1:7000", True)
    assert RedisTarget.parse("redis://h/0").url == "redis://h/0"  # the default port
    for bad in (
        "postgres://x",
        "redis://",
        "redis+cluster://h:1/3",
        "redis://h:port/0",
        "redis://h:0/0",
        "redis://h:70000",
    ):
        with pytest.raises(ConfigError, match="store"):
            RedisTarget.parse(bad)
    with pytest.raises(ConfigError, match="redis_wait_replicas"):
        load_settings(
            environ={"RECEIPT_SERVICE_STORE": "redis+cluster://h:1", "RECEIPT_SERVICE_REDIS_WAIT_REPLICAS": "1"}
        )
    s = load_settings(
        environ={"RECEIPT_SERVICE_REDIS_UNSAFE_PERSISTENCE": "yes", "RECEIPT_SERVICE_STORE": "redis://h:1/2"}
    )
    assert s.redis_unsafe_persistence and s.store == "redis://h:1/2"
    with pytest.raises(ConfigError, match="redis_unsafe_persistence"):
        load_settings(environ={"RECEIPT_SERVICE_REDIS_UNSAFE_PERSISTENCE": "maybe"})
    with pytest.raises(ConfigError, match="lease_seconds"):
        Settings(lease_seconds=0.1).check()


@pytest.mark.parametrize(
    ("appendonly", "fsync", "truncated", "named"),
    [
        ("yes", "everysec", "no", "appendfsync"),
        ("no", "always", "no", "appendonly"),
        ("yes", "always", "yes", "aof-load-truncated"),
    ],
)
async def test_a_redis_that_could_lose_writes_is_refused(
    tmp_path: Path, appendonly: str, fsync: str, truncated: str, named: str
) -> None:
    server = RedisServer(tmp_path, appendonly=appendonly, fsync=fsync, load_truncated=truncated).start()
    try:
        link = _link(server.url)
        with pytest.raises(StoreError, match=f"{named} is .*needs") as info:
            link.check_persistence(allow_unsafe=False)
        assert "redis_unsafe_persistence" in str(info.value)
        link.check_persistence(allow_unsafe=True)  # the operator's explicit opt-out
        await link.close()
    finally:
        server.stop()


def test_serve_refuses_such_a_redis_naming_the_setting(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", fsync="everysec").start()
    try:
        cmd = [*CLI, "serve", "--store", server.url, "--data-dir", str(tmp_path / "data"), "--port", "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 1
        assert "appendfsync is 'everysec', needs 'always'" in out.stderr and "redis_unsafe_persistence" in out.stderr
        lines: list[str] = []
        env = {"RECEIPT_SERVICE_STORE": server.url, "RECEIPT_SERVICE_REDIS_UNSAFE_PERSISTENCE": "true"}
        with procs.server(tmp_path / "data", 0.2, env=env, lines=lines):  # the operator opted out: it serves
            pass
        assert any("can be lost on a crash" in line for line in lines)
    finally:
        server.stop()


def test_a_torn_aof_is_repaired_and_what_was_acknowledged_after_survives(tmp_path: Path) -> None:
    """Why aof-load-truncated must be no: the half transaction a kill -9 can leave is cut by the repair.

    With Redis 7.0's default (yes) the half block stays in the file and swallows the writes acknowledged
    after the restart at the next one; stopping and running redis-check-aof --fix keeps them."""
    server = RedisServer(tmp_path).start()
    script = "redis.call('set', KEYS[1], '1'); redis.call('set', KEYS[2], '2')"  # two writes: MULTI/EXEC in the AOF
    try:
        client = redis.Redis(port=server.port)
        client.set("before", "1")
        client.eval(script, 2, "torn-a", "torn-b")
        server.kill()
        [incr] = (tmp_path / "appendonlydir").glob("*.incr.aof")
        os.truncate(incr, incr.stat().st_size - 3)  # the kill tore the transaction's EXEC
        server.start()
        assert server.repairs == 1, "Redis started on a torn AOF"
        client = redis.Redis(port=server.port)
        assert (client.get("before"), client.get("torn-a")) == (b"1", None)  # all or nothing of the script
        client.set("acknowledged-after", "1")
        client.eval(script, 2, "later-a", "later-b")
        server.kill()
        server.start()
        client = redis.Redis(port=server.port)
        assert client.mget("acknowledged-after", "later-a", "later-b") == [b"1", b"1", b"2"]
    finally:
        server.stop()


async def test_writes_wait_for_replicas_when_asked(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", replica_of=primary.port).start()
    try:
        client = redis.Redis(port=primary.port)
        for _ in range(100):
            if client.info("replication").get("slave0", {}).get("state") == "online":
                break
            await asyncio.sleep(0.1)
        link = RedisLink(RedisTarget.parse(primary.url), wait_replicas=1, wait_timeout_ms=500)
        store = RedisStore(link)
        issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
        assert await store.add_batch(_batch(issuer, 3)) == 1
        assert redis.Redis(port=replica.port).hget(store.k("batches"), "1") is not None  # on the replica already
        replica.kill()
        with pytest.raises(StoreError, match="only 0 of 1 Redis replicas"):
            await store.add_batch(_batch(issuer, 3))
        await link.close()
        client.close()
    finally:
        replica.stop()
        primary.stop()


async def test_a_redis_that_stops_answering_fails_requests_instead_of_holding_them(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    link = RedisLink(RedisTarget.parse(server.url), timeout_seconds=0.5)
    try:
        store = RedisStore(link)
        issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="Redis"):
            await store.add_batch(_batch(issuer, 2))
        assert time.monotonic() - t0 < 5
        server.proc.send_signal(signal.SIGCONT)
        assert await store.add_batch(_batch(issuer, 2)) >= 1  # and works again once it answers
    finally:
        await link.close()
        server.stop()


async def test_a_leader_paused_past_its_lease_cannot_commit(redis_url: str) -> None:
    a = RedisStore(_link(redis_url), lease_seconds=0.5)
    b = RedisStore(_link(redis_url), lease_seconds=0.5)
    assert a.clock_seq != b.clock_seq  # each instance issues ids on its own clock
    assert await a.lead() and not await b.lead()
    fence_a = a.fence
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    await a.add_batch(_batch(issuer, 4))
    spans = await a.backlog(100)
    trees = tree_records("a-1", 1, build_packed([s.columns(None) for s in spans], 10), "s", "e")
    await asyncio.sleep(0.7)  # a is "paused" past its lease
    assert await b.lead() and b.fence is not None and fence_a is not None and b.fence > fence_a
    with pytest.raises(LeaseLostError, match="another instance"):
        await a.commit_window(trees, ["local-x"])
    assert (await a.stats()).trees == 0 and (await a.stats()).backlog == 4
    assert not await a.lead()  # and it knows it follows now
    trees_b = tree_records("b-1", 1, build_packed([s.columns(None) for s in await b.backlog(100)], 10), "s", "e")
    await b.commit_window(trees_b, ["local-x"])
    assert [t.window_id for t, _ in await a.open_anchor_jobs()] == ["b-1"]
    await a.link.close()
    await b.link.close()


async def test_a_lease_taken_again_is_a_new_term_that_a_late_refusal_does_not_forget(redis_url: str) -> None:
    """An outage longer than the lease: the lease task takes it again (a new fencing token) while a window
    built under the old one is on its way. That window is refused; the instance keeps its new lease (it used
    to forget it, and nobody could lead the lane until it ran out) and commits the window again."""
    a = RedisStore(_link(redis_url), lease_seconds=0.5)
    first = await a.lead()
    assert first is not None and await a.lead() == first  # renewing keeps the term
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    await a.add_batch(_batch(issuer, 3))
    trees = tree_records("a-1", 1, build_packed([s.columns(None) for s in await a.backlog(100)], 10), "s", "e")
    await asyncio.sleep(0.7)  # the lease runs out
    run = a.link.run
    second: int | None = None

    async def late(name: str, keys: Any, args: Any, **kw: Any) -> Any:
        nonlocal second
        if name == "commit_window":  # the window is on its way; the lease task's check reaches Redis first
            second = await a.lead()
        return await run(name, keys, args, **kw)

    a.link.run = late
    with pytest.raises(LeaseLostError, match="another instance took over"):
        await a.commit_window(trees, ["local-x"])
    a.link.run = run
    assert second is not None and second > first
    assert await a.lead() == second  # still leads, in the new term
    await a.commit_window(trees, ["local-x"])
    assert (await a.stats()).trees == 1
    await a.link.close()


async def test_a_leader_that_stops_cleanly_hands_the_lead_over_at_once(redis_url: str) -> None:
    a = RedisStore(_link(redis_url), lease_seconds=60)
    b = RedisStore(_link(redis_url), lease_seconds=60)
    assert await a.lead() and not await b.lead()
    await b.resign()  # a follower has nothing to give up: the leader keeps the lease
    assert await a.lead() and not await b.lead()
    await a.resign()
    assert await b.lead() and not await a.lead()  # long before the 60 s lease would have run out
    await a.link.close()
    await b.link.close()


async def test_a_lease_granted_to_a_cut_off_check_is_given_up_too(redis_url: str) -> None:
    """A stop cancels a lease check after Redis granted the lease but before its answer came back: the
    instance never learnt it leads, yet its resign gives the lease up (before, it held it a whole lease)."""
    a = RedisStore(_link(redis_url), lease_seconds=60)
    b = RedisStore(_link(redis_url), lease_seconds=60)
    run = a.link.run

    async def cut_off(name: str, keys: Any, args: Any, **kw: Any) -> Any:
        await run(name, keys, args, **kw)  # Redis ran the script
        raise asyncio.CancelledError  # the stop cancelled the check before its answer was read

    a.link.run = cut_off
    with pytest.raises(asyncio.CancelledError):
        await a.lead()
    a.link.run = run
    assert await b.lead() is None  # a holds the lease without knowing it
    await a.resign()
    assert await b.lead() is not None
    await a.resign()  # a lease of another instance stays
    assert await b.lead() is not None and await a.lead() is None
    await a.link.close()
    await b.link.close()


async def test_overlapping_ticks_on_one_clock_are_refused_never_duplicated(redis_url: str) -> None:
    a = RedisStore(_link(redis_url))
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    first = _batch(issuer, 5)
    later = _batch(issuer, 2)
    await a.add_batch(later)  # requests may reach Redis out of order: that is fine
    await a.add_batch(first)
    clone = ProofIdIssuer(a.clock_seq)  # an instance on the same clock (paused past its clock lease)
    overlapping = _batch(clone, 3)
    with pytest.raises(TicksTakenError) as info:
        await a.add_batch(overlapping)
    assert info.value.last_ticks == later.first_ticks + 1
    clone.resume_after(info.value.last_ticks)
    assert await a.add_batch(_batch(clone, 3)) == 8
    await a.link.close()


async def test_a_dead_instances_clock_is_reused_after_its_lease(redis_url: str) -> None:
    a = RedisStore(_link(redis_url), clock_lease_seconds=0.3)
    issuer = ProofIdIssuer(a.clock_seq, a.last_ticks())
    b1 = _batch(issuer, 3)
    await a.add_batch(b1)
    await a.link.close()  # "dies"; its clock lease runs out
    await asyncio.sleep(0.5)
    c = RedisStore(_link(redis_url))
    assert c.clock_seq == a.clock_seq and c.last_ticks() == b1.first_ticks + 2
    assert await c.has_clock(a.clock_seq)
    await c.link.close()


async def test_long_polls_wake_on_another_instances_commit(redis_url: str) -> None:
    a = RedisStore(_link(redis_url))
    b = RedisStore(_link(redis_url))
    assert await a.lead()
    woken: list[tuple[int, int]] = []
    watch = asyncio.create_task(b.watch(lambda f, last: woken.append((f, last))))
    await asyncio.sleep(0.2)
    await a.add_batch(_batch(ProofIdIssuer(a.clock_seq, a.last_ticks()), 3))
    spans = await a.backlog(10)
    trees = tree_records("a-1", 1, build_packed([s.columns(None) for s in spans], 10), "s", "e")
    await a.commit_window(trees, ["local-x"])
    await a.record_anchor(trees[0], "local-x", "{}", 1)
    for _ in range(50):
        if len(woken) == 2:
            break
        await asyncio.sleep(0.05)
    watch.cancel()
    assert woken == [(1, 3), (1, 3)]  # committed, then anchored
    await a.link.close()
    await b.link.close()


async def test_the_shared_ledger_appends_a_tree_once_whichever_instance_sends_it(redis_url: str) -> None:
    key = Ed25519PrivateKey.generate()
    client_a, client_b = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    a, b = RedisLedger(client_a, key), RedisLedger(client_b, key)
    roots = [TreeRoot(f"w-{i}", 0, 3, os.urandom(32).hex(), T0, T1) for i in range(20)]
    results = await asyncio.gather(
        *(asyncio.to_thread(led.append, r, T1) for r in roots for led in (a, b))  # both race on every tree
    )
    assert len(a) == 20
    for i in range(20):
        assert results[2 * i] == results[2 * i + 1]  # one entry per tree, the same for both
    verify_chain(a.entries(), key.public_key())
    other = TreeRoot("w-0", 0, 3, "00" * 32, T0, T1)
    with pytest.raises(Exception, match="refusing a different root"):
        b.append(other, T1)
    with pytest.raises(LedgerError, match=r"copy ledger-key\.pem"):
        RedisLedger(client_a, Ed25519PrivateKey.generate())
    client_a.close()
    client_b.close()
