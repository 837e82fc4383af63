"""A store file's connections: small reads on the caller's thread, bulk reads in a worker thread, writes
through the ``Writer``, and rare administrative writes on a connection of their own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ...errors import StoreError
from .schema import connect
from .writer import Writer

T = TypeVar("T")


class Connections:
    """The connections of one store file and the calls every part of ``SQLiteStore`` reads and writes through."""

    path: Path
    worker: int | None  # None: the only process on the file
    writer: Writer
    _r: sqlite3.Connection
    _bulk: sqlite3.Connection
    _bulk_lock: threading.Lock

    def _read(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._r.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    async def _bulk_read(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.write(fn)

    def _read_all(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._r.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read: {exc}") from None

    def _admin(self) -> _AdminTx:
        return _AdminTx(self.path)


class _AdminTx:
    """A short synchronous write transaction on its own connection (keys are rare writes)."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._conn.close()
