"""``receipt_service.server``: the process around the service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from receipt_service import server
from receipt_service.config import Settings
from receipt_service.errors import StoreError, StoreStoppedError
from receipt_service.ledger import LocalLedger
from receipt_service.service import Service
from receipt_service.stores.sqlite import SQLiteStore

from .aggregation import _batch


class _Bug(BaseException):
    """What no write job should raise: it stops the SQLite writer thread."""


async def test_a_service_whose_store_takes_no_more_writes_stops_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer thread ends (a bug): rather than answer 503 until someone notices, the process stops
    with an error, so whatever supervises it starts it again; the restart anchors what was committed."""
    opened: list[Service] = []

    def capture(settings: Settings, worker: int | None = None) -> Service:
        opened.append(real(settings, worker))
        return opened[-1]

    real = server.open_service
    monkeypatch.setattr(server, "open_service", capture)
    settings = Settings(data_dir=tmp_path, port=0, window_seconds=3600).check()
    caplog.set_level(logging.INFO, logger="receipt_service")
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(server.serve(settings, ready=ready.set_result))
    await asyncio.wait_for(ready, 30)
    [service] = opened
    store = service.store
    assert isinstance(store, SQLiteStore)
    await store.add_batch(_batch(3))  # acknowledged: committed in the open window

    def bug(conn: Any) -> None:
        raise _Bug("a bug in a write job")

    with pytest.raises(StoreError):
        await store.writer.write(bug)
    with pytest.raises(StoreStoppedError, match=r"stopped: the database writer stopped .*_Bug: a bug in a write job"):
        await asyncio.wait_for(serving, 30)
    assert "stopping: a store takes no more writes" in caplog.text
    assert "drain stopped early" in caplog.text  # at once: no retrying until the grace ends
    assert LocalLedger(tmp_path).entries() == []

    stop = asyncio.Event()  # the restart: the three hashes are closed into a window and anchored
    again: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(server.serve(settings, ready=again.set_result, stop=stop))
    await asyncio.wait_for(again, 30)
    stop.set()
    await asyncio.wait_for(serving, 60)
    assert [e.entry.tree_size for e in LocalLedger(tmp_path).entries()] == [3]
