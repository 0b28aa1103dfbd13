"""The in-process limiter's budget counters in the vault's SQLite file (schema step 3).

:class:`SqliteSpendStore` shares the :class:`~keyguard.storage.sqlite.SqliteStore`'s connection
and lock. Its writes do not move the store's change counter: spend is not a key change, and
the authenticator must not reload its snapshot every few seconds because of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from keyguard.storage import codec as c
from keyguard.storage.sqlite_base import SqliteBase, decodes


class SqliteSpendStore:
    """A :class:`~keyguard.limits.ports.SpendStore` over an open SQLite store."""

    def __init__(self, store: SqliteBase) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SqliteSpendStore({self._store.path!r})"

    def add_spend(self, deltas: Mapping[tuple[str, str], int], now: datetime) -> None:
        if not deltas:
            return
        s = self._store
        stamp = c.iso(now)
        with s.transaction():
            for (key_id, period), delta in deltas.items():
                s._run(
                    "INSERT INTO limit_spend (key_id, period, spent_nano, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (key_id, period) DO UPDATE SET"
                    " spent_nano = spent_nano + excluded.spent_nano,"
                    " updated_at = excluded.updated_at",
                    (key_id, period, int(delta), stamp),
                )

    @decodes
    def load_spend(self) -> dict[tuple[str, str], int]:
        s = self._store
        with s._lock:
            rows = s._run("SELECT key_id, period, spent_nano FROM limit_spend").fetchall()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    @decodes
    def spend_of(self, key_id: str) -> dict[str, int]:
        """Period id -> nano-USD for one key (``keyguard key usage``)."""
        s = self._store
        with s._lock:
            rows = s._run(
                "SELECT period, spent_nano FROM limit_spend WHERE key_id = ?", (key_id,)
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}
