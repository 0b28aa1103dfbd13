"""SQLite plumbing of the store: connection, transactions, error mapping, the SQL hooks.

One connection per store object, guarded by a re-entrant lock (safe to share between threads);
several processes may open the same file. WAL journal with ``synchronous=FULL`` (a committed
write survives power loss, not just a crash; writes are small and rare except audit batches),
foreign keys on, a busy timeout, and ``BEGIN IMMEDIATE`` for write transactions so a writer
takes the lock before reading what it will change; a read outside a transaction is a single
statement, hence one consistent snapshot. The file is created with mode 0600.
Every ``sqlite3`` error leaves this package as a :mod:`keyguard.errors` storage error.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from keyguard.errors import StorageError, StorageUnavailable
from keyguard.storage.sqlbase import Row, SqlBase, decodes
from keyguard.storage.sqlite_schema import migrate

__all__ = ["MEMORY", "SqliteBase", "decodes"]

MEMORY = ":memory:"

#: how long one attempt to take the write lock waits inside SQLite (then other threads may read)
_BEGIN_STEP_MS = 10


def _wrap(exc: sqlite3.Error) -> StorageError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        low = text.lower()
        if "locked" in low or "busy" in low:
            return StorageUnavailable(f"database is busy (another writer holds it): {text}")
        if "unable to open" in low or "readonly" in low or "disk i/o" in low:
            return StorageUnavailable(f"cannot use the database file: {text}")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text.lower():
        return StorageError(f"the file is not a keyguard database or is corrupt: {text}")
    return StorageError(f"database error: {text}")


def _is_busy(exc: sqlite3.Error) -> bool:
    low = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in low or "busy" in low)


def _text(raw: bytes) -> str:
    # invalid UTF-8 (a tampered or corrupt row) must not break reads: keep the bytes recoverable
    return raw.decode("utf-8", "surrogateescape")


class SqliteBase(SqlBase):
    """Connection, transactions, the :class:`~keyguard.storage.sqlbase.SqlBase` hooks and the
    change counter of one SQLite database."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._depth = 0
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._busy_timeout = busy_timeout_ms / 1000
        try:
            if self.path != MEMORY and not os.path.exists(self.path):
                with contextlib.suppress(FileExistsError):  # create 0600 before sqlite does
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StorageUnavailable(f"cannot create database {self.path}: {exc.strerror}") from exc
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.text_factory = _text
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self.transaction():
                migrate(self._conn)
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise _wrap(exc) from exc

    # -- plumbing -------------------------------------------------------------------------

    def _begin(self) -> None:
        """Take ``self._lock`` and ``BEGIN IMMEDIATE``. While another connection holds the
        file's write lock, wait for it in short steps with ``self._lock`` released: this
        store's other threads (the gateway's request path) keep reading meanwhile."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            self._lock.acquire()
            if self._depth:  # a transaction of this thread: join it
                return
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {_BEGIN_STEP_MS}")
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                return
            except sqlite3.Error as exc:
                self._lock.release()
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise _wrap(exc) from exc
            time.sleep(0)  # let a waiting reader have self._lock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one."""
        self._begin()
        try:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise _wrap(exc) from exc
        finally:
            self._lock.release()

    def _one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        with self._lock:
            try:  # fetches wrapped too: decoding happens while fetching
                row: Row | None = self._conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise _wrap(exc) from exc
        return row

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock:
            try:
                rows: list[Row] = self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _wrap(exc) from exc
        return rows

    def _run(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._lock:
            try:
                return self._conn.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise _wrap(exc) from exc

    def _run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        with self._lock:
            try:
                return self._conn.executemany(sql, rows).rowcount
            except sqlite3.Error as exc:
                raise _wrap(exc) from exc

    @decodes
    def generation(self) -> int:
        row = self._one("SELECT value FROM generation WHERE id = 1")
        return int(row[0])  # type: ignore[index]

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
