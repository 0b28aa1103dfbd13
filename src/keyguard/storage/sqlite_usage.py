"""The in-process limiter's budget counters in the vault's SQLite file (schema step 3).

:class:`SqliteSpendStore` shares the :class:`~keyguard.storage.sqlite.SqliteStore`'s connection
and lock; its queries are :class:`~keyguard.storage.usage_tables.SpendTables` (both backends).
"""

from __future__ import annotations

from keyguard.storage.sqlite_base import SqliteBase
from keyguard.storage.usage_tables import SpendTables


class SqliteSpendStore(SpendTables):
    """A :class:`~keyguard.limits.ports.SpendStore` over an open SQLite store."""

    def __init__(self, store: SqliteBase) -> None:
        super().__init__(store)
        self._path = store.path

    def __repr__(self) -> str:
        return f"SqliteSpendStore({self._path!r})"
