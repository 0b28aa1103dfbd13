"""The Redis limiter for the gateway's event loop (``redis.asyncio``); see :mod:`.redis_lua`.

Each call is bounded by one ``timeout`` context around the whole script call, not by redis-py's
``socket_timeout``, which wraps every socket write in ``asyncio.wait_for`` (a new task per
command: a large share of the per-request cost).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis

from keyguard.domain.limits import DEFAULT_LEASE_S, Limits, Reservation, Usage, period_id
from keyguard.domain.pricing import Estimate
from keyguard.limits import redis_lua as lua
from keyguard.limits.ports import reservation_ids
from keyguard.limits.redis_sync import unavailable

if sys.version_info >= (3, 11, 3):
    from asyncio import timeout as _timeout  # type: ignore[attr-defined,unused-ignore]
else:  # pragma: no cover - redis-py depends on async-timeout there
    from async_timeout import timeout as _timeout  # type: ignore[import-not-found,no-redef]

_T = TypeVar("_T")


def connect_async(url: str, *, timeout: float = 1.0) -> aredis.Redis:
    """An asyncio client for ``url``: connecting is bounded by ``timeout``; commands are
    bounded by :class:`AsyncRedisLimiter` itself."""
    client: aredis.Redis = aredis.Redis.from_url(
        url, socket_timeout=None, socket_connect_timeout=timeout, health_check_interval=10
    )  # socket_timeout=None explicitly: redis-py 8 defaults to 5 s (and wait_for per write)
    return client


class AsyncRedisLimiter:
    """An :class:`~keyguard.limits.ports.AsyncLimiter` shared through Redis."""

    def __init__(
        self,
        client: aredis.Redis,
        *,
        prefix: str = "kg:",
        lease_s: float = DEFAULT_LEASE_S,
        new_id: Callable[[], str] | None = None,
        timeout: float = 1.0,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._prefix = prefix
        self._lease_s = lease_s
        self._new_id = new_id or reservation_ids()
        self._reserve: Any = client.register_script(lua.RESERVE)
        self._settle: Any = client.register_script(lua.SETTLE)
        self._record: Any = client.register_script(lua.RECORD)

    def __repr__(self) -> str:
        return f"AsyncRedisLimiter(prefix={self._prefix!r})"

    async def _bounded(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with _timeout(self._timeout):
                return await call()
        except (redis.RedisError, TimeoutError) as exc:
            raise unavailable(exc) from exc

    async def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation:
        names = lua.KeyNames.of(self._prefix, key_id)
        rid = self._new_id()
        args = lua.reserve_args(names, rid, limits, estimate, now, self._lease_s)
        reply = await self._bounded(lambda: self._reserve(keys=names.keys, args=args))
        return lua.reserve_result(reply, key_id, rid, limits, estimate, now, self._lease_s)

    async def settle(
        self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime
    ) -> None:
        if not reservation.counted:
            return
        names = lua.KeyNames.of(self._prefix, reservation.key_id)
        args = lua.settle_args(names, reservation, tokens, cost_nano, now)
        await self._bounded(lambda: self._settle(keys=names.keys, args=args))

    async def release(self, reservation: Reservation, now: datetime) -> None:
        await self.settle(reservation, 0, 0, now)

    async def record(
        self,
        key_id: str,
        limits: Limits,
        tokens: int,
        cost_nano: int,
        now: datetime,
        requests: int = 1,
    ) -> None:
        names = lua.KeyNames.of(self._prefix, key_id)
        args = lua.record_args(names, limits, tokens, cost_nano, now, requests)
        await self._bounded(lambda: self._record(keys=[names.window], args=args))

    async def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage:
        names = lua.KeyNames.of(self._prefix, key_id)
        ms = int(now.timestamp() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(names.window)
        pipe.zcount(names.inflight, f"({ms}", "+inf")
        pipe.hmget(names.budget_prefix + period_id(limits.period, now), ["spent", "held"])
        window, in_flight, budget = await self._bounded(pipe.execute)
        return lua.usage_from(key_id, limits, now, window, int(in_flight), budget)

    async def ping(self) -> bool:
        return bool(await self._bounded(self._client.ping))

    async def aclose(self) -> None:
        await self._client.aclose()
