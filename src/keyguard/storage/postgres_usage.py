"""The in-process limiter's budget counters in the PostgreSQL vault schema (schema step 3).

:class:`PgSpendStore` shares the :class:`~keyguard.storage.postgres.PostgresStore`'s pool and
transactions; its queries are :class:`~keyguard.storage.usage_tables.SpendTables` (both backends).
"""

from __future__ import annotations

from keyguard.storage.postgres_base import PgBase
from keyguard.storage.usage_tables import SpendTables


class PgSpendStore(SpendTables):
    """A :class:`~keyguard.limits.ports.SpendStore` over an open PostgreSQL store."""

    def __init__(self, store: PgBase) -> None:
        super().__init__(store)

    def __repr__(self) -> str:
        return f"PgSpendStore({self._store!r})"
