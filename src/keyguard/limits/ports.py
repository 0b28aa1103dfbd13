"""The limiter port: reserve before forwarding, settle (or release) when the response ends."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from keyguard.domain.limits import Limits, Reservation, Usage
from keyguard.domain.pricing import Estimate
from keyguard.errors import StorageUnavailable


def reservation_ids() -> Callable[[], str]:
    """A source of unique reservation ids: a random prefix, the process id, a counter.

    Not a fresh random value per request: ``os.urandom`` costs ~90 µs on some hosts."""
    prefix = secrets.token_hex(6)
    counter = itertools.count()
    return lambda: f"{prefix}{os.getpid():x}.{next(counter):x}"


class LimiterUnavailable(StorageUnavailable):
    """The shared counter store (Redis) cannot be reached: the gateway fails closed (503)."""


class Limiter(Protocol):
    """Counts requests, tokens, concurrency and spend per key; every call takes ``now``.

    ``reserve`` is atomic across every process sharing the limiter: it takes ``estimate``
    or raises :class:`~keyguard.errors.RateLimited` (with ``retry_after``) and takes nothing.
    """

    def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation: ...

    def settle(self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime) -> None:
        """Replace the reservation's estimate by what the request really used."""
        ...

    def release(self, reservation: Reservation, now: datetime) -> None:
        """The request never reached the upstream (or failed): return its tokens and money."""
        ...

    def record(
        self,
        key_id: str,
        limits: Limits,
        tokens: int,
        cost_nano: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        """Count ``requests`` finished requests of a key without limits, their tokens and
        cost summed (usage only, never denied)."""
        ...

    def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage: ...

    def close(self) -> None: ...


class AsyncLimiter(Protocol):
    """:class:`Limiter` for an event loop (the gateway)."""

    async def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation: ...

    async def settle(
        self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime
    ) -> None: ...

    async def release(self, reservation: Reservation, now: datetime) -> None: ...

    async def record(
        self,
        key_id: str,
        limits: Limits,
        tokens: int,
        cost_nano: int,
        now: datetime,
        requests: int = 1,
    ) -> None: ...

    async def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage: ...

    async def aclose(self) -> None: ...


class SpendStore(Protocol):
    """Where the in-process limiter keeps budgets across restarts (the SQLite vault file)."""

    def add_spend(self, deltas: Mapping[tuple[str, str], int], now: datetime) -> None:
        """Add nano-USD per (key id, period id), in one transaction."""
        ...

    def load_spend(self) -> dict[tuple[str, str], int]:
        """Every stored (key id, period id) -> nano-USD total."""
        ...
