"""What every store must do, run against the SQLite store and the Redis store (a real redis-server)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from receipt_service.errors import ConflictError, CorruptRecordError, StoreError, TicksTakenError
from receipt_service.ids import ProofIdIssuer, ceil_us
from receipt_service.stores.base import (
    ApiKeyRecord,
    Batch,
    EventRecord,
    SigningKeyRecord,
    Store,
    StoredBatch,
    SubjectHead,
    TreeRecord,
)
from receipt_service.stores.redis import RedisLink, RedisStore, RedisTarget
from receipt_service.stores.sqlite import SQLiteStore
from receipt_service.trees import build_packed
from receipt_service.windows import tree_records
from receipt_verifier.logs import frontier_append, frontier_root

SUBJECT = "pseudonym-0000000000000001"
Opener = Callable[..., Store]


@pytest.fixture(params=["sqlite", "sqlite-worker", "redis", "redis-cluster"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[Store] = []
    used: set[int] = set()  # clock sequences taken by the lanes opened so far
    links: list[RedisLink] = []
    url = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}.get(request.param)
    url = request.getfixturevalue(url) if url else ""

    def make(domain: str | None = None) -> Store:
        store: Store
        name = f"receipts.{domain or 'v1'}.sqlite3"
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path, name=name, domain=domain)
        elif request.param == "sqlite-worker":  # worker 1 of two sharing the file (serve --workers)
            if (tmp_path / name).exists():  # opened again: the same worker, after a restart
                store = SQLiteStore(tmp_path, name=name, domain=domain, worker=1)
                opened.append(store)
                return store
            first = SQLiteStore(tmp_path, name=name, domain=domain, avoid_clock_seqs=used)
            used.add(first.clock_seq)
            first.reserve_clock(1, next(c for c in range(1, 1 << 14) if c not in used))
            first.close_sync()
            store = SQLiteStore(tmp_path, name=name, domain=domain, worker=1)
            used.add(store.clock_seq)
        else:
            links.append(RedisLink(RedisTarget.parse(url)))
            store = RedisStore(links[-1], domain=domain)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
        if isinstance(store, SQLiteStore):
            store.close_sync()
    for link in links:
        await link.close()


def _batch(issuer: ProofIdIssuer, items: int | list[bytes], subject: str = "", tenant: str = "t") -> Batch:
    """A batch of these hashes, or of that many random ones."""
    hashes = [os.urandom(32) for _ in range(items)] if isinstance(items, int) else items
    n = len(hashes)
    issued = issuer.issue_batch(hashes, 1_763_712_000_000_000_000)
    return Batch(tenant, issued.first_ticks, issued.proof_id_bytes, b"".join(hashes), os.urandom(16 * n), subject)


def _trees(spans: list[StoredBatch], window: str = "w-1", domain: str | None = None) -> list[TreeRecord]:
    packed = build_packed([s.columns(domain) for s in spans], 4)
    return tree_records(window, spans[0].first_seq, packed, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")


async def test_batches_get_consecutive_seqs_and_are_found_by_clock_and_ticks(open_store: Opener) -> None:
    store = open_store()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    batches = [_batch(issuer, 3) for _ in range(40)]
    firsts = await asyncio.gather(*(store.add_batch(b) for b in batches))
    assert sorted(firsts) == list(range(1, 121, 3))  # consecutive, no gaps, no overlaps
    ids = [(store.clock_seq, b.first_ticks + i) for b in batches for i in range(3)]
    rows = await store.get_submissions(ids)
    assert [rows[k].hash for k in ids] == [b.hashes[32 * i : 32 * i + 32] for b in batches for i in range(3)]
    assert {rows[k].seq for k in ids} == set(range(1, 121))
    assert await store.has_clock(store.clock_seq)
    other = (store.clock_seq + 1) % (1 << 14)
    assert not await store.has_clock(other)
    assert await store.get_submissions([(other, batches[0].first_ticks)]) == {}
    assert await store.get_submissions([(store.clock_seq, batches[-1].first_ticks + 3)]) == {}
    stats = await store.stats()
    assert (stats.submissions, stats.backlog, stats.trees, stats.pending_anchors) == (120, 120, 0, 0)


async def test_a_window_commits_trees_jobs_and_the_watermark_once(open_store: Opener) -> None:
    store = open_store()
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    for n in (2, 5, 3):
        await store.add_batch(_batch(issuer, n))
    spans = await store.backlog(100)
    assert [(s.first_seq, s.batch.count) for s in spans] == [(1, 2), (3, 5), (8, 3)]
    trees = _trees(spans)
    assert [(t.first_seq, t.last_seq) for t in trees] == [(1, 4), (5, 8), (9, 10)]
    await store.commit_window(trees, ["local-x", "fabric-y"])
    assert await store.backlog(100) == []
    with pytest.raises(StoreError, match="watermark"):
        await store.commit_window(trees, ["local-x"])
    assert await store.tree_for_seq(6) == trees[1]
    assert await store.tree_for_seq(11) is None
    spans2 = await store.tree_batches(trees[1])
    assert [(s.first_seq, s.batch.count) for s in spans2] == [(5, 3), (8, 1)]
    jobs = await store.open_anchor_jobs()
    assert sorted((t.tree_index, target) for t, target in jobs) == [
        (i, x) for i in range(3) for x in ("fabric-y", "local-x")
    ]
    assert [t.tree_index for t, _ in jobs] == [0, 0, 1, 1, 2, 2]  # oldest first
    await store.record_anchor_failure(trees[0], "local-x", "down")
    await store.record_anchor(trees[0], "local-x", '{"a":1}', 123)
    await store.record_anchor(trees[0], "local-x", '{"a":2}', 456)  # a second record keeps one answer
    anchors = {a.target: a for a in await store.anchors_for(trees[0])}
    assert anchors["local-x"].anchor_json in ('{"a":1}', '{"a":2}')
    assert anchors["local-x"].attempts == 3 and anchors["local-x"].last_error is None
    assert anchors["fabric-y"].anchor_json is None
    assert len(await store.open_anchor_jobs()) == 5
    stats = await store.stats()
    assert (stats.submissions, stats.backlog, stats.trees, stats.pending_anchors) == (10, 0, 3, 5)


async def test_a_seal_refuses_later_batches_received_before_it(open_store: Opener) -> None:
    store = open_store()
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    early, straggler = _batch(issuer, 2), _batch(issuer, 3)  # issued together, the second stored late
    await store.add_batch(early)
    assert await store.seal(0) == (2, ceil_us(early.first_ticks + 1))  # past every stored receive time
    last, floor = await store.seal(ceil_us(early.first_ticks) + 1000)
    assert (last, floor) == (2, ceil_us(early.first_ticks) + 1000)
    assert await store.seal(floor - 10) == (2, floor), "a floor never goes down"
    with pytest.raises(TicksTakenError) as err:
        await store.add_batch(straggler)
    assert err.value.last_ticks == floor - 1
    issuer.resume_after(err.value.last_ticks)
    again = _batch(issuer, 3)
    assert again.first_ticks == floor and await store.add_batch(again) == 3
    assert [(s.first_seq, s.last_seq) for s in await store.backlog(100, 2)] == [(1, 2)]
    assert [(s.first_seq, s.last_seq) for s in await store.backlog(100)] == [(1, 2), (3, 5)]
    assert await store.min_ticks(0, 5) == early.first_ticks
    assert await store.min_ticks(1, 5) == early.first_ticks + 1  # inside a batch
    assert await store.min_ticks(2, 5) == floor
    assert await store.min_ticks(5, 5) is None
    await store.commit_window(_trees(await store.backlog(100)), [])
    reopened = open_store()  # the floor outlives the process that set it
    late = _batch(ProofIdIssuer(store.clock_seq, 0), 1)
    with pytest.raises(TicksTakenError):
        await reopened.add_batch(late)


async def test_subject_logs_heads_and_frontiers(open_store: Opener) -> None:
    store = open_store("medical-history")
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    a = _batch(issuer, 3, SUBJECT)
    await store.add_batch(_batch(issuer, 2))
    await store.add_batch(a)
    await store.add_batch(_batch(issuer, 2, SUBJECT))
    recs = await store.subject_records(SUBJECT, -1, 100)
    assert [(r.seq, r.log_pos) for r in recs] == [(3, 0), (4, 1), (5, 2), (6, 3), (7, 4)]
    assert [r.log_pos for r in await store.subject_records(SUBJECT, 2, 100)] == [3, 4]
    assert [r.log_pos for r in await store.subject_records(SUBJECT, 0, 2)] == [1, 2]
    assert await store.has_record(SUBJECT, a.hashes[32:64])
    assert not await store.has_record(SUBJECT, os.urandom(32))
    spans = await store.backlog(100)
    frontier: list[bytes] = []
    for i in range(5):
        frontier = frontier_append(frontier, i, bytes([i]) * 32)
    head = SubjectHead(SUBJECT, 5, frontier_root(frontier), tuple(frontier))
    trees = _trees(spans, domain="medical-history")
    await store.commit_window(trees, ["local-x"], [head])
    assert await store.subject_frontier(SUBJECT) == head
    assert await store.subject_frontier("nobody-000000000000000") is None
    assert await store.subject_heads() == {SUBJECT: (5, head.root)}
    assert await store.subject_heads(upto=trees[-1].last_seq) == {SUBJECT: (5, head.root)}
    assert await store.subject_heads(upto=trees[-1].last_seq - 1) == {}


async def test_anchored_windows_are_listed_newest_first_up_to_a_time(open_store: Opener) -> None:
    store = open_store("medical-history")
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    ends = []
    for w in range(5):
        await store.add_batch(_batch(issuer, 2))
        spans = await store.backlog(100)
        end = f"2026-01-01T00:00:0{w}Z"
        trees = [
            replace(t, window_end=end, heads_root=bytes([w]) * 32, heads_size=w)
            for t in _trees(spans, window=f"w-{w}", domain="medical-history")
        ]
        await store.commit_window(trees, ["local-x"])
        ends.append(end)
    found = await store.anchored_windows("2026-01-01T00:00:03Z")
    assert [t.window_id for t in found] == ["w-3", "w-2", "w-1", "w-0"]
    assert found[0].heads_root == bytes([3]) * 32 and found[0].heads_size == 3
    assert await store.anchored_windows("2025-12-31T00:00:00Z") == []


async def test_subjects_keys_and_access_events(open_store: Opener) -> None:
    store = open_store()
    key = SigningKeyRecord("kid-1", SUBJECT, "app", '{"kty":"OKP"}', "2026-01-01T00:00:00Z")
    await store.register_subject(SUBJECT, "app", key)
    await store.register_subject(SUBJECT, "app", key)  # again: a no-op
    assert await store.subject_tenant(SUBJECT) == "app"
    with pytest.raises(ConflictError, match="another app"):
        await store.register_subject(SUBJECT, "other", key)
    assert await store.get_signing_key("kid-1") == key
    with pytest.raises(ConflictError, match="another party"):
        await store.add_signing_key(SigningKeyRecord("kid-1", "clinic", "clinic", "{}", "x"))
    assert await store.get_signing_key("nope") is None

    def ev(replay: str, action: str, receiver: str = "clinic") -> EventRecord:
        return EventRecord(replay, "h" * 64, SUBJECT, receiver, "medical-history", action, "t", None, "{}", "p", "app")

    assert await store.add_event(ev("r1", "grant"))
    assert not await store.add_event(ev("r1", "grant"))  # a replay
    assert await store.seen_event("r1") and not await store.seen_event("r9")
    assert await store.add_event(ev("r2", "read"))
    assert await store.add_event(ev("r3", "revoke"))
    assert await store.add_event(ev("r4", "grant", "insurer"))
    assert [e.replay_id for e in await store.events(SUBJECT)] == ["r1", "r2", "r3", "r4"]
    last = await store.last_decision(SUBJECT, "clinic", "medical-history")
    assert last is not None and last.replay_id == "r3" and last.n > 0
    assert await store.last_decision(SUBJECT, "clinic", "insurance") is None


async def test_api_keys_and_fabric_blocks(open_store: Opener) -> None:
    store = open_store()
    k = ApiKeyRecord(
        "k1", "clinic", b"\x01" * 32, frozenset({"submit", "read"}), "2026-01-01T00:00:00Z", None, "provider"
    )
    store.create_api_key(k)
    store.create_api_key(ApiKeyRecord("k2", "x", b"\x02" * 32, frozenset(), "2026-01-02T00:00:00Z", None))
    assert await store.get_api_key("k1") == k
    assert store.revoke_api_key("k1", "2026-02-01T00:00:00Z")
    assert not store.revoke_api_key("k1", "2026-02-02T00:00:00Z")
    assert not store.revoke_api_key("zz", "2026-02-02T00:00:00Z")
    keys = store.list_api_keys()
    assert [(x.key_id, x.revoked, x.scopes) for x in keys] == [
        ("k1", "2026-02-01T00:00:00Z", frozenset({"submit", "read"})),
        ("k2", None, frozenset()),
    ]
    await store.put_fabric_block("ch", 7, b"block-7")
    await store.put_fabric_block("ch", 7, b"other")  # a kept block stays as it is
    assert await store.get_fabric_block("ch", 7) == b"block-7"
    assert await store.get_fabric_block("ch", 8) is None


async def test_purge_drops_only_fully_anchored_old_trees(open_store: Opener) -> None:
    store = open_store()
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    batches = [_batch(issuer, 4), _batch(issuer, 4)]
    for b in batches:
        await store.add_batch(b)
    trees = _trees(await store.backlog(100))
    await store.commit_window(trees, ["local-x"])
    await store.record_anchor(trees[0], "local-x", "{}", 1)
    removed = await store.purge(2**62)
    assert removed == 4  # the second tree still waits for its anchor
    rows = await store.get_submissions([(store.clock_seq, b.first_ticks) for b in batches])
    assert list(rows) == [(store.clock_seq, batches[1].first_ticks)]
    assert await store.tree_for_seq(2) is None and await store.tree_for_seq(6) == trees[1]
    assert (await store.stats()).submissions == 4


def _subject_index(store: Store) -> dict[bytes, int]:
    """The store's own subject index: record hash -> newest seq."""
    if isinstance(store, RedisStore):
        raw = store.link.sync.hgetall(store.k(f"sq:{SUBJECT}"))
        return {h: int(seq) for h, seq in raw.items()}
    assert isinstance(store, SQLiteStore)
    rows = store._read("SELECT hash, last_seq FROM subject_hashes WHERE subject = ?", (SUBJECT,))
    return {bytes(h): seq for h, seq in rows}


async def _two_subject_trees(store: Store) -> tuple[list[bytes], list[TreeRecord]]:
    """Records A B C | D A E of one subject (A twice) in trees of seqs 1-4 and 5-6; the second batch spans both."""
    assert await store.lead()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    a, b, c, d, e = (bytes([i]) * 32 for i in range(1, 6))
    await store.add_batch(_batch(issuer, [a, b, c], SUBJECT))
    await store.add_batch(_batch(issuer, [d, a, e], SUBJECT))
    trees = _trees(await store.backlog(100), domain="medical-history")
    assert [(t.first_seq, t.last_seq) for t in trees] == [(1, 4), (5, 6)]
    await store.commit_window(trees, ["local-x"])
    return [a, b, c, d, e], trees


async def test_retention_forgets_a_subjects_records_whose_newest_submission_went(open_store: Opener) -> None:
    store = open_store("medical-history")
    (a, b, c, d, e), trees = await _two_subject_trees(store)
    assert _subject_index(store) == {a: 5, b: 2, c: 3, d: 4, e: 6}
    await store.record_anchor(trees[0], "local-x", "{}", 1)
    assert await store.purge(2**62) == 4
    assert [await store.has_record(SUBJECT, h) for h in (a, b, c, d, e)] == [True, False, False, False, True]
    assert _subject_index(store) == {a: 5, e: 6}  # A's second submission keeps it
    assert [(r.seq, r.log_pos, r.hash) for r in await store.subject_records(SUBJECT, -1, 10)] == [(5, 4, a), (6, 5, e)]
    await store.record_anchor(trees[1], "local-x", "{}", 1)
    assert await store.purge(2**62) == 2
    assert _subject_index(store) == {}
    assert not await store.has_record(SUBJECT, a) and await store.subject_records(SUBJECT, -1, 10) == []
    if isinstance(store, RedisStore):  # the subject's batch index goes with its batches
        assert store.link.sync.zcard(store.k(f"sb:{SUBJECT}")) == 0


async def test_a_large_subject_batch_indexes_every_hash_at_its_own_seq(open_store: Opener) -> None:
    store = open_store("medical-history")
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    hashes = [i.to_bytes(32, "big") for i in range(1, 602)]  # Redis writes the index 250 hashes at a time
    await store.add_batch(_batch(issuer, hashes[:1], SUBJECT))
    await store.add_batch(_batch(issuer, hashes[1:], SUBJECT))
    assert _subject_index(store) == {h: seq for seq, h in enumerate(hashes, 1)}


async def test_a_subject_record_set_of_an_older_release_is_rebuilt_as_the_index(open_store: Opener) -> None:
    store = open_store("medical-history")
    (a, b, c, d, e), trees = await _two_subject_trees(store)
    await store.record_anchor(trees[0], "local-x", "{}", 1)
    await store.purge(2**62)
    await store.close()
    if isinstance(store, RedisStore):  # older releases: a set of the subject's hashes, never purged
        s = store.link.sync
        s.delete(store.k(f"sq:{SUBJECT}"))
        s.sadd(store.k(f"sh:{SUBJECT}"), a, b, c, d, e)
        s.hdel(store.k("meta"), "subject_index")
        s.hset(store.k(f"sq:{SUBJECT}"), a, 99)  # meanwhile a new instance took A again: the rebuild keeps that
    else:
        assert isinstance(store, SQLiteStore)
        store.close_sync()
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP TABLE subject_hashes")
            conn.execute(
                "CREATE TABLE subject_hashes (subject TEXT, hash BLOB, PRIMARY KEY (subject, hash)) WITHOUT ROWID"
            )
            conn.executemany("INSERT INTO subject_hashes VALUES (?, ?)", [(SUBJECT, h) for h in (a, b, c, d, e)])
        conn.close()
    again = open_store("medical-history")
    kept = {a: 99 if isinstance(again, RedisStore) else 5, e: 6}
    assert _subject_index(again) == kept
    assert [await again.has_record(SUBJECT, h) for h in (a, b, c, d, e)] == [True, False, False, False, True]
    if isinstance(again, RedisStore):
        assert not again.link.sync.exists(again.k(f"sh:{SUBJECT}"))
    assert _subject_index(open_store("medical-history")) == kept  # a later open leaves the index as it is


async def test_lanes_keep_their_own_submissions(open_store: Opener) -> None:
    a, b = open_store("medical-history"), open_store("insurance")
    ia, ib = ProofIdIssuer(a.clock_seq, a.last_ticks()), ProofIdIssuer(b.clock_seq, b.last_ticks())
    assert await a.add_batch(_batch(ia, 2)) == 1
    assert await b.add_batch(_batch(ib, 3)) == 1
    assert (await a.stats()).submissions == 2 and (await b.stats()).submissions == 3
    assert a.clock_seq != b.clock_seq


async def test_a_damaged_batch_is_refused(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    issuer = ProofIdIssuer(store.clock_seq, store.last_ticks())
    b = _batch(issuer, 3)
    await store.add_batch(b)
    if isinstance(store, RedisStore):
        key = store.k("batches")
        value = store.link.sync.hget(key, "1")
        store.link.sync.hset(key, "1", value[:-40] + bytes([value[-40] ^ 1]) + value[-39:])  # one bit of a hash
    else:
        assert isinstance(store, SQLiteStore)
        store._w.execute("UPDATE batches SET hashes = ? WHERE first_seq = 1", (os.urandom(96),))
    with pytest.raises(CorruptRecordError):
        await store.get_submissions([(store.clock_seq, b.first_ticks)])
