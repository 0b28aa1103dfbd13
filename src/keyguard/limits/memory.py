"""The in-process limiter (embedded mode): counters in memory, budgets persisted.

Thread-safe (one lock; every operation is a few dict updates). Request and token windows live
only in memory (a restart forgets the last minute); money spent is flushed to a
:class:`~keyguard.limits.ports.SpendStore` every ``flush_interval`` seconds as *increments*, and
the totals are read back, so several worker processes sharing one SQLite file each see the
others' spend within one interval, and a restart resumes the period where it stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from typing import Any

from keyguard.domain.limits import (
    DEFAULT_LEASE_S,
    KeyCounters,
    Limits,
    Reservation,
    Usage,
    period_bounds,
    period_id,
)
from keyguard.domain.pricing import COUNTER_MAX, Estimate, nano_to_usd
from keyguard.errors import StorageError
from keyguard.limits.ports import SpendStore, reservation_ids

log = logging.getLogger("keyguard.limits")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MemoryLimiter:
    """A :class:`~keyguard.limits.ports.Limiter` for one process."""

    def __init__(
        self,
        spend_store: SpendStore | None = None,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        flush_interval: float = 5.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyCounters] = {}
        self._store = spend_store
        self._lease_s = lease_s
        self._interval = flush_interval
        self._clock = clock
        self._pending: dict[tuple[str, str], int] = {}
        self._new_id = reservation_ids()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if spend_store is not None:
            self._apply(spend_store.load_spend())

    def __repr__(self) -> str:
        return f"MemoryLimiter(keys={len(self._keys)}, persisted={self._store is not None})"

    def _counters(self, key_id: str) -> KeyCounters:
        c = self._keys.get(key_id)
        if c is None:
            c = self._keys[key_id] = KeyCounters()
            if self._store is not None:  # spend increments are queued for the store
                c.spend_log = partial(self._note, key_id)
        return c

    # -- the Limiter port -----------------------------------------------------------------

    def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation:
        rid = self._new_id()
        with self._lock:
            return self._counters(key_id).reserve(rid, key_id, limits, estimate, now, self._lease_s)

    def settle(self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime) -> None:
        if not reservation.counted:
            return
        with self._lock:
            c = self._counters(reservation.key_id)
            c.expire(now.timestamp())
            c.settle(reservation, tokens, cost_nano)

    def release(self, reservation: Reservation, now: datetime) -> None:
        self.settle(reservation, 0, 0, now)

    def record(
        self,
        key_id: str,
        limits: Limits,
        tokens: int,
        cost_nano: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        with self._lock:
            self._counters(key_id).record(limits, tokens, cost_nano, now, requests)

    def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage:
        sec = int(now.timestamp())
        period = period_id(limits.period, now)
        start, end = period_bounds(limits.period, now)
        with self._lock:
            c = self._counters(key_id)
            c.expire(now.timestamp())
            return Usage(
                key_id=key_id,
                requests_last_minute=c.requests.total(sec),
                tokens_last_minute=c.tokens.total(sec),
                in_flight=len(c.inflight),
                period=period,
                spent_usd=nano_to_usd(c.spent.get(period, 0)),
                held_usd=nano_to_usd(c.held.get(period, 0)),
                budget_usd=nano_to_usd(limits.budget_nano)
                if limits.budget_nano is not None
                else None,
                period_start=start,
                period_end=end,
            )

    # -- persistence ----------------------------------------------------------------------

    def _note(self, key_id: str, period: str, nano: int) -> None:
        """A spend increment to persist (called under the lock, by the key's counters)."""
        row = (key_id, period)
        self._pending[row] = min(self._pending.get(row, 0) + nano, COUNTER_MAX)

    def _apply(self, totals: dict[tuple[str, str], int]) -> None:
        """Take the stored totals as truth, plus what was spent here since they were read."""
        for (key_id, period), total in totals.items():
            c = self._counters(key_id)
            c.spent[period] = min(total + self._pending.get((key_id, period), 0), COUNTER_MAX)

    def flush(self) -> None:
        """Write spend increments and read every total back (also done by the flush thread)."""
        if self._store is None:
            return
        with self._lock:
            deltas, self._pending = self._pending, {}
        try:
            self._store.add_spend(deltas, self._clock())
            totals = self._store.load_spend()
        except StorageError as exc:
            log.warning("could not persist budget counters: %s", type(exc).__name__)
            with self._lock:  # keep them for the next attempt
                for row, delta in deltas.items():
                    self._pending[row] = min(self._pending.get(row, 0) + delta, COUNTER_MAX)
            return
        with self._lock:
            self._apply(totals)

    def start(self) -> MemoryLimiter:
        """Flush in a daemon thread every ``flush_interval`` seconds (no-op without a store)."""
        if self._store is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keyguard-limits", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.flush()


class AsyncMemoryLimiter:
    """:class:`MemoryLimiter` behind the :class:`~keyguard.limits.ports.AsyncLimiter` port
    (its calls take microseconds and never do I/O: they run on the loop directly)."""

    def __init__(self, limiter: MemoryLimiter) -> None:
        self.limiter = limiter

    def __repr__(self) -> str:
        return f"Async{self.limiter!r}"

    async def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation:
        return self.limiter.reserve(key_id, limits, estimate, now)

    async def settle(
        self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime
    ) -> None:
        self.limiter.settle(reservation, tokens, cost_nano, now)

    async def release(self, reservation: Reservation, now: datetime) -> None:
        self.limiter.release(reservation, now)

    async def record(
        self,
        key_id: str,
        limits: Limits,
        tokens: int,
        cost_nano: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        self.limiter.record(key_id, limits, tokens, cost_nano, now, requests)

    async def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage:
        return self.limiter.usage(key_id, limits, now)

    async def aclose(self) -> None:
        self.limiter.close()


def spend_store_for(store: object) -> Any:
    """The :class:`SpendStore` of a vault store (SQLite or PostgreSQL), else ``None``.

    Typed ``Any`` (a ``SpendStore | None``) so callers need not import the backends."""
    from keyguard.storage.sqlite_base import SqliteBase
    from keyguard.storage.sqlite_usage import SqliteSpendStore

    if isinstance(store, SqliteBase):
        return SqliteSpendStore(store)
    try:
        from keyguard.storage.postgres_base import PgBase
        from keyguard.storage.postgres_usage import PgSpendStore
    except ImportError:  # psycopg not installed: not a PostgreSQL store either
        return None
    if isinstance(store, PgBase):
        return PgSpendStore(store)
    return None
