"""What the dialect-neutral table code needs from a SQL backend: a handful of hooks.

The table groups (:mod:`~keyguard.storage.vault_tables`, :mod:`~keyguard.storage.audit_tables`,
:mod:`~keyguard.storage.rotation_tables`, :mod:`~keyguard.storage.admin_token_tables`,
:mod:`~keyguard.storage.usage_tables`) are written once, against :class:`SqlBase`; the SQLite
(:mod:`~keyguard.storage.sqlite_base`) and PostgreSQL (:mod:`~keyguard.storage.postgres_base`)
bases implement its hooks. Their SQL is the common subset of both dialects:

* ``?`` placeholders (the PostgreSQL base turns them into psycopg's ``%s`` once per statement),
  so never a literal ``?`` or ``%`` in a statement: values always go in as parameters;
* ``INSERT ... ON CONFLICT (...) DO NOTHING`` plus the row count where a row may already exist
  (never an integrity error: on PostgreSQL an error would poison the whole, possibly outer,
  transaction, where SQLite fails just the statement), ``ON CONFLICT ... DO UPDATE`` for upserts
  (columns of the existing row qualified by the table name);
* no ``RETURNING``, ``ANY``, ``LIMIT -1``: a read-then-write runs in :meth:`transaction`,
  which on both backends holds the vault's write lock, so what it read stays current.

Each hook is atomic on its own; reads outside a transaction are single statements (one
consistent snapshot on both backends). What really differs stays in the dialect modules:
connections, transactions and the write lock, error mapping, and the DDL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

from keyguard.errors import KeyguardError, StorageError

#: one fetched row (a tuple on both backends)
Row = tuple[Any, ...]

_F = TypeVar("_F", bound=Callable[..., Any])


def decodes(method: _F) -> _F:
    """Turn a malformed row (a value that does not convert back) into a :class:`StorageError`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except KeyguardError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise StorageError(
                f"the database holds a malformed row ({method.__name__}): corrupt or tampered"
            ) from exc

    return cast(_F, wrapper)


class SqlBase:
    """The hooks of one SQL backend, plus the two writes built on them.

    Every hook raises :mod:`keyguard.errors` storage errors only (driver errors are wrapped by
    the backend). :meth:`_run` and :meth:`_run_many` are writes: call them inside
    :meth:`transaction` (or use :meth:`_write`).
    """

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction holding the vault's write lock (re-entrant)."""
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        """The first row of a query, or ``None``."""
        raise NotImplementedError

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Every row of a query."""
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute one write statement; the number of rows it touched."""
        raise NotImplementedError

    def _run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """Execute one write statement per parameter row (one driver call); rows touched."""
        raise NotImplementedError

    def _write(self, sql: str, params: Sequence[object] = (), *, bump: bool = True) -> int:
        """One write in its own (or the current) transaction; ``bump`` moves the generation."""
        with self.transaction():
            n = self._run(sql, params)
            if bump:
                self._bump()
            return n

    def _bump(self) -> None:
        """Move the change counter (inside a transaction)."""
        self._run("UPDATE generation SET value = value + 1 WHERE id = 1")
