"""Rate limits and budgets of virtual keys: the limiter port and its backends.

* :class:`~keyguard.limits.memory.MemoryLimiter` — in-process (embedded mode), thread-safe,
  budgets persisted to the vault's SQLite file so they survive a restart.
* :class:`~keyguard.limits.redis_sync.RedisLimiter` /
  :class:`~keyguard.limits.redis_async.AsyncRedisLimiter` — shared by every replica, atomic
  Lua scripts (same arithmetic as :mod:`keyguard.domain.limits`).
* :mod:`keyguard.limits.events` — key change events over Redis pub/sub.
* :mod:`keyguard.limits.prices` — the shipped price table and user overrides.
"""

from keyguard.limits.ports import AsyncLimiter, Limiter, LimiterUnavailable

__all__ = ["AsyncLimiter", "Limiter", "LimiterUnavailable"]
