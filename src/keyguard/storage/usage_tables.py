"""The in-process limiter's budget counters (schema step 3), written once for both SQL backends.

Increments are added with one upsert per (key, period), so several processes flushing at once
add up instead of overwriting each other. Spend writes do not move the store's change counter:
spend is not a key change, and the authenticator must not reload its snapshot every few seconds
because of it. The backends' :class:`~keyguard.limits.ports.SpendStore` classes
(:mod:`keyguard.storage.sqlite_usage`, :mod:`keyguard.storage.postgres_usage`) share the open
store's connections and transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from keyguard.storage import codec as c
from keyguard.storage.sqlbase import SqlBase, decodes


class SpendTables:
    """A :class:`~keyguard.limits.ports.SpendStore` over an open SQL store."""

    def __init__(self, store: SqlBase) -> None:
        self._store = store

    def add_spend(self, deltas: Mapping[tuple[str, str], int], now: datetime) -> None:
        if not deltas:
            return
        stamp = c.iso(now)
        rows = [(key_id, period, int(d), stamp) for (key_id, period), d in deltas.items()]
        with self._store.transaction():
            self._store._run_many(
                "INSERT INTO limit_spend (key_id, period, spent_nano, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key_id, period) DO UPDATE SET"
                " spent_nano = limit_spend.spent_nano + excluded.spent_nano,"
                " updated_at = excluded.updated_at",
                rows,
            )

    @decodes
    def load_spend(self) -> dict[tuple[str, str], int]:
        rows = self._store._all("SELECT key_id, period, spent_nano FROM limit_spend")
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    @decodes
    def spend_of(self, key_id: str) -> dict[str, int]:
        """Period id -> nano-USD for one key (``keyguard key usage``)."""
        rows = self._store._all(
            "SELECT period, spent_nano FROM limit_spend WHERE key_id = ?", (key_id,)
        )
        return {str(r[0]): int(r[1]) for r in rows}
