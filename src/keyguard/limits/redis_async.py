"""The Redis limiter for the gateway's event loop (``redis.asyncio``); see :mod:`.redis_lua`."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
import redis.asyncio as aredis

from keyguard.domain.limits import DEFAULT_LEASE_S, Limits, Reservation, Usage, period_id
from keyguard.domain.pricing import Estimate
from keyguard.limits import redis_lua as lua
from keyguard.limits.ports import LimiterUnavailable


def _unavailable(exc: redis.RedisError) -> LimiterUnavailable:
    return LimiterUnavailable(f"the limits store (Redis) is unavailable: {type(exc).__name__}")


def connect_async(url: str, *, timeout: float = 1.0) -> aredis.Redis:
    """An asyncio client for ``url`` with short timeouts."""
    client: aredis.Redis = aredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10
    )
    return client


class AsyncRedisLimiter:
    """An :class:`~keyguard.limits.ports.AsyncLimiter` shared through Redis."""

    def __init__(
        self,
        client: aredis.Redis,
        *,
        prefix: str = "kg:",
        lease_s: float = DEFAULT_LEASE_S,
        new_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_s = lease_s
        self._new_id = new_id
        self._reserve: Any = client.register_script(lua.RESERVE)
        self._settle: Any = client.register_script(lua.SETTLE)
        self._record: Any = client.register_script(lua.RECORD)

    def __repr__(self) -> str:
        return f"AsyncRedisLimiter(prefix={self._prefix!r})"

    async def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation:
        names = lua.KeyNames.of(self._prefix, key_id)
        rid = self._new_id()
        args = lua.reserve_args(names, rid, limits, estimate, now, self._lease_s)
        try:
            reply = await self._reserve(keys=names.keys, args=args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return lua.reserve_result(reply, key_id, rid, limits, estimate, now, self._lease_s)

    async def settle(
        self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime
    ) -> None:
        if not reservation.counted:
            return
        names = lua.KeyNames.of(self._prefix, reservation.key_id)
        args = lua.settle_args(names, reservation, tokens, cost_nano, now)
        try:
            await self._settle(keys=names.keys, args=args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def release(self, reservation: Reservation, now: datetime) -> None:
        await self.settle(reservation, 0, 0, now)

    async def record(
        self, key_id: str, limits: Limits, tokens: int, cost_nano: int, now: datetime
    ) -> None:
        names = lua.KeyNames.of(self._prefix, key_id)
        args = lua.record_args(names, limits, tokens, cost_nano, now)
        try:
            await self._record(keys=[names.window], args=args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage:
        names = lua.KeyNames.of(self._prefix, key_id)
        ms = int(now.timestamp() * 1000)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(names.window)
            pipe.zcount(names.inflight, f"({ms}", "+inf")
            pipe.hmget(names.budget_prefix + period_id(limits.period, now), ["spent", "held"])
            window, in_flight, budget = await pipe.execute()
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return lua.usage_from(key_id, limits, now, window, int(in_flight), budget)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
