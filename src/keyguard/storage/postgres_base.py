"""PostgreSQL plumbing of the store: pool, transactions, change counter, the SQL hooks.

Connections come from a small :class:`psycopg_pool.ConnectionPool` (autocommit), so the gateway's
event loop (cache checks) never queues behind its audit thread's batch. A transaction belongs to
the thread that opened it (thread-local); nested calls join it.

Writes are serialised the way SQLite's ``BEGIN IMMEDIATE`` serialises them: every write
transaction first takes a transaction-scoped advisory lock of this vault (keyed by the OID of
its ``generation`` table, so two vaults in two schemas do not contend). Whatever a writer reads
after that is current and stays current until it commits. That is what keeps the audit chain
linear across processes and replicas: read head, chain, append, commit, one writer at a time.
Plain reads take no lock (MVCC); each is a single statement, hence one consistent snapshot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from keyguard.errors import StorageError
from keyguard.storage.postgres_conn import PgTarget
from keyguard.storage.postgres_schema import LOCK_NAMESPACE, migrate
from keyguard.storage.sqlbase import Row, SqlBase

_T = TypeVar("_T")
Conn = psycopg.Connection[Any]

#: statements of the shared table code (``?`` placeholders) as psycopg wants them (``%s``)
_PSYCOPG_SQL: dict[str, str] = {}


def _psycopg_sql(sql: str) -> str:
    """``sql`` with psycopg's placeholders, translated once per statement (statements are
    constants: values are always parameters, so the cache stays as small as the code)."""
    q = _PSYCOPG_SQL.get(sql)
    if q is None:
        q = _PSYCOPG_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return q


class PgBase(SqlBase):
    """Connections, transactions, the :class:`~keyguard.storage.sqlbase.SqlBase` hooks and the
    change counter of one keyguard schema."""

    def __init__(self, target: PgTarget, *, pool_size: int = 4, pool_timeout: float = 5.0) -> None:
        self._target = target
        self._local = threading.local()
        try:  # a direct connection first: a clear error when the server cannot be reached
            with psycopg.connect(**target.params, autocommit=True) as conn:
                self._configure(conn)
                #: the schema version found on opening (0: this call created the schema)
                self.migrated_from = migrate(conn, target.schema)
                row = conn.execute("SELECT 'generation'::regclass::oid").fetchone()
        except psycopg.Error as exc:
            raise target.wrap(exc) from exc
        assert row is not None
        self._begin_sql = f"BEGIN; SELECT pg_advisory_xact_lock({LOCK_NAMESPACE + int(row[0])})"
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            kwargs={**target.params, "autocommit": True},
            min_size=1,
            max_size=max(1, pool_size),
            timeout=pool_timeout,
            open=False,
            name="keyguard",
            configure=self._configure,
        )
        self._pool.open(wait=False)

    # -- connections ----------------------------------------------------------------------

    def _configure(self, conn: Conn) -> None:
        """Session settings of every new connection (lock timeout, the schema's search path)."""
        names = list(self._target.session)
        if names:
            calls = ", ".join("set_config(%s, %s, false)" for _ in names)
            values = [v for name in names for v in (name, self._target.session[name])]
            conn.execute(f"SELECT {calls}", values)  # type: ignore[arg-type]

    def _tx(self) -> Conn | None:
        conn: Conn | None = getattr(self._local, "conn", None)
        return conn

    def _use(self, fn: Callable[[Conn], _T]) -> _T:
        """Run ``fn`` on this thread's transaction, or on a pooled connection (a read: retried
        once on a fresh connection when the pooled one turns out dead, e.g. after a restart)."""
        tx = self._tx()
        if tx is not None:
            try:
                return fn(tx)
            except psycopg.Error as exc:
                raise self._target.wrap(exc) from exc
        for attempt in (1, 2):
            used: Conn | None = None
            try:
                with self._pool.connection() as conn:
                    used = conn
                    return fn(conn)
            except psycopg.Error as exc:
                if attempt == 1 and used is not None and used.broken:
                    self._pool.check()  # the others are likely dead too: test them all once
                    continue
                raise self._target.wrap(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        q = _psycopg_sql(sql)
        return self._use(lambda conn: conn.execute(q, params).fetchone())  # type: ignore[arg-type]

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        q = _psycopg_sql(sql)
        return self._use(lambda conn: conn.execute(q, params).fetchall())  # type: ignore[arg-type]

    def _run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute a write inside the current transaction; the number of rows it touched."""
        assert self._tx() is not None, "writes run inside transaction()"
        q = _psycopg_sql(sql)
        return self._use(lambda conn: conn.execute(q, params).rowcount)  # type: ignore[arg-type]

    def _run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        assert self._tx() is not None, "writes run inside transaction()"
        q = _psycopg_sql(sql)

        def run(conn: Conn) -> int:
            with conn.cursor() as cur:
                cur.executemany(q, rows)  # type: ignore[arg-type]
                return cur.rowcount

        return self._use(run) if rows else 0

    # -- transactions ---------------------------------------------------------------------

    def _begin(self) -> Conn:
        for attempt in (1, 2):
            conn = self._pool.getconn()
            try:
                conn.execute(self._begin_sql)  # type: ignore[arg-type]
                return conn
            except psycopg.Error as exc:
                broken = conn.broken
                self._giveback(conn, rollback=True)
                if attempt == 1 and broken:
                    self._pool.check()
                    continue
                raise self._target.wrap(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _giveback(self, conn: Conn, *, rollback: bool) -> None:
        if rollback and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        self._pool.putconn(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction holding the vault's write lock; nested calls join the outer one.
        An exception inside rolls everything back."""
        if self._tx() is not None:
            yield
            return
        try:
            conn = self._begin()
        except psycopg.Error as exc:  # PoolTimeout: no connection could be had
            raise self._target.wrap(exc) from exc
        self._local.conn = conn
        try:
            yield
        except BaseException:
            self._local.conn = None
            self._giveback(conn, rollback=True)
            raise
        self._local.conn = None
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._giveback(conn, rollback=True)
            raise self._target.wrap(exc) from exc
        self._giveback(conn, rollback=False)

    def generation(self) -> int:
        row = self._one("SELECT value FROM generation WHERE id = 1")
        if row is None:
            raise StorageError("the generation row is missing: corrupt or tampered database")
        return int(row[0])

    def close(self) -> None:
        """Close every pooled connection (the store is unusable afterwards)."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._target.display!r})"
