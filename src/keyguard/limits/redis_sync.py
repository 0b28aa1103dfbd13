"""The Redis limiter for threads and processes (CLI, tests, tools); see :mod:`.redis_lua`.

Scripts run with ``EVALSHA`` and fall back to ``EVAL`` when Redis has forgotten them (a restart
or ``SCRIPT FLUSH``) — redis-py's registered scripts do that. Every Redis error becomes
:class:`~keyguard.limits.ports.LimiterUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis

from keyguard.domain.limits import DEFAULT_LEASE_S, Limits, Reservation, Usage, period_id
from keyguard.domain.pricing import Estimate
from keyguard.limits import redis_lua as lua
from keyguard.limits.ports import LimiterUnavailable, reservation_ids


def unavailable(exc: BaseException) -> LimiterUnavailable:
    """The :class:`LimiterUnavailable` for a Redis failure: names its type only, never the
    URL or the server's message."""
    return LimiterUnavailable(f"the limits store (Redis) is unavailable: {type(exc).__name__}")


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn redis-py's errors into :class:`LimiterUnavailable` (see :func:`unavailable`)."""
    try:
        yield
    except redis.RedisError as exc:
        raise unavailable(exc) from exc


def connect(url: str, *, timeout: float = 1.0) -> redis.Redis:
    """A client for ``url`` with short timeouts (admission must not hang on a dead Redis)."""
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10
    )
    return client


class RedisLimiter:
    """A :class:`~keyguard.limits.ports.Limiter` shared through Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "kg:",
        lease_s: float = DEFAULT_LEASE_S,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_s = lease_s
        self._new_id = new_id or reservation_ids()
        self._reserve: Any = client.register_script(lua.RESERVE)
        self._settle: Any = client.register_script(lua.SETTLE)
        self._record: Any = client.register_script(lua.RECORD)

    def __repr__(self) -> str:
        return f"RedisLimiter(prefix={self._prefix!r})"

    def reserve(
        self, key_id: str, limits: Limits, estimate: Estimate, now: datetime
    ) -> Reservation:
        names = lua.KeyNames.of(self._prefix, key_id)
        rid = self._new_id()
        args = lua.reserve_args(names, rid, limits, estimate, now, self._lease_s)
        with redis_errors():
            reply = self._reserve(keys=names.keys, args=args)
        return lua.reserve_result(reply, key_id, rid, limits, estimate, now, self._lease_s)

    def settle(self, reservation: Reservation, tokens: int, cost_nano: int, now: datetime) -> None:
        if not reservation.counted:
            return
        names = lua.KeyNames.of(self._prefix, reservation.key_id)
        with redis_errors():
            self._settle(
                keys=names.keys, args=lua.settle_args(names, reservation, tokens, cost_nano, now)
            )

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
        names = lua.KeyNames.of(self._prefix, key_id)
        args = lua.record_args(names, limits, tokens, cost_nano, now, requests)
        with redis_errors():
            self._record(keys=[names.window], args=args)

    def usage(self, key_id: str, limits: Limits, now: datetime) -> Usage:
        names = lua.KeyNames.of(self._prefix, key_id)
        ms = int(now.timestamp() * 1000)
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(names.window)
            pipe.zcount(names.inflight, f"({ms}", "+inf")
            pipe.hmget(names.budget_prefix + period_id(limits.period, now), ["spent", "held"])
            window, in_flight, budget = pipe.execute()
        return lua.usage_from(key_id, limits, now, window, int(in_flight), budget)

    def ping(self) -> bool:
        with redis_errors():
            return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()
