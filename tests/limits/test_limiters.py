"""The limiter contract, run against the in-process limiter and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from keyguard.domain.limits import Limits
from keyguard.domain.pricing import Estimate, usd_to_nano
from keyguard.domain.records import BudgetPeriod
from keyguard.errors import RateLimited
from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter
from keyguard.limits.ports import Limiter, LimiterUnavailable
from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async
from keyguard.limits.redis_sync import RedisLimiter
from keyguard.storage.sqlite import SqliteStore
from keyguard.storage.sqlite_usage import SqliteSpendStore

from .conftest import REDIS_URL

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    client = request.getfixturevalue("redis_client")
    yield RedisLimiter(client, prefix=request.getfixturevalue("prefix"))


def test_rpm_window(limiter: Limiter) -> None:
    lim = Limits(rpm=3)
    for i in range(3):
        limiter.reserve("k1", lim, Estimate(), at(i))
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("k1", lim, Estimate(), at(10.5))
    assert exc.value.retry_after == pytest.approx(49.5)
    limiter.reserve("k2", lim, Estimate(), at(10.5))  # keys are independent
    limiter.reserve("k1", lim, Estimate(), at(60))
    u = limiter.usage("k1", lim, at(60))
    assert u.requests_last_minute == 3


def test_tpm_settles_to_actual(limiter: Limiter) -> None:
    lim = Limits(tpm=1000)
    r = limiter.reserve("k", lim, Estimate(tokens=900), at(0))
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("k", lim, Estimate(tokens=200), at(1))
    assert exc.value.retry_after == pytest.approx(59)
    limiter.settle(r, 50, 0, at(2))
    limiter.reserve("k", lim, Estimate(tokens=200), at(3))
    assert limiter.usage("k", lim, at(3)).tokens_last_minute == 250
    with pytest.raises(RateLimited, match="too large"):
        limiter.reserve("k", lim, Estimate(tokens=5000), at(4))


def test_concurrency_release_and_lease(limiter: Limiter) -> None:
    lim = Limits(max_concurrency=1)
    r = limiter.reserve("k", lim, Estimate(), at(0))
    with pytest.raises(RateLimited, match="concurrent"):
        limiter.reserve("k", lim, Estimate(), at(1))
    assert limiter.usage("k", lim, at(1)).in_flight == 1
    limiter.release(r, at(2))
    limiter.release(r, at(2))  # idempotent
    limiter.reserve("k", lim, Estimate(), at(3))
    # a crashed holder's lease runs out (default 900 s)
    limiter.reserve("k", lim, Estimate(), at(3 + 901))


def test_budget_holds_then_spends(limiter: Limiter) -> None:
    lim = Limits(budget_nano=usd_to_nano(1.0), period=BudgetPeriod.MONTHLY)
    est = Estimate(tokens=10, cost_nano=usd_to_nano(0.4))
    r1 = limiter.reserve("k", lim, est, at(0))
    r2 = limiter.reserve("k", lim, est, at(0))
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("k", lim, est, at(1))
    assert exc.value.code == "insufficient_quota" and exc.value.retry_after == 1.0
    limiter.settle(r1, 10, usd_to_nano(0.1), at(2))
    limiter.settle(r2, 10, usd_to_nano(0.1), at(2))
    u = limiter.usage("k", lim, at(2))
    assert u.spent_usd == pytest.approx(0.2) and u.held_usd == 0 and u.budget_usd == 1.0
    limiter.reserve("k", lim, est, at(3))
    limiter.reserve("k", lim, est, at(3))
    with pytest.raises(RateLimited) as exc:
        limiter.reserve("k", lim, est, at(4))
    assert u.period == "m2026-11"
    # a new month starts from zero
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=timezone.utc)
    limiter.reserve("k", lim, est, december)


def test_big_budgets_stay_exact(limiter: Limiter) -> None:
    lim = Limits(budget_nano=usd_to_nano(5_000_000.0), period=BudgetPeriod.TOTAL)
    r = limiter.reserve("k", lim, Estimate(cost_nano=usd_to_nano(1_000_000.0)), at(0))
    limiter.settle(r, 0, usd_to_nano(1_234_567.891), at(1))
    assert limiter.usage("k", lim, at(1)).spent_usd == pytest.approx(1_234_567.891)


def test_async_limiters_agree(redis_client: redis.Redis, prefix: str) -> None:
    async def run() -> None:
        for lim_obj in (
            AsyncMemoryLimiter(MemoryLimiter()),
            AsyncRedisLimiter(connect_async(REDIS_URL), prefix=prefix),
        ):
            lim = Limits(rpm=2, budget_nano=usd_to_nano(1))
            r = await lim_obj.reserve("k", lim, Estimate(cost_nano=5), at(0))
            await lim_obj.reserve("k", lim, Estimate(), at(0))
            with pytest.raises(RateLimited):
                await lim_obj.reserve("k", lim, Estimate(), at(1))
            await lim_obj.settle(r, 3, 7, at(1))
            u = await lim_obj.usage("k", lim, at(1))
            assert u.spent_usd == pytest.approx(7e-9) and u.requests_last_minute == 2
            await lim_obj.aclose()

    asyncio.run(run())


def test_scripts_survive_script_flush(redis_client: redis.Redis, prefix: str) -> None:
    lim = RedisLimiter(redis_client, prefix=prefix)
    lim.reserve("k", Limits(rpm=5), Estimate(), at(0))
    redis_client.script_flush()  # EVALSHA fails with NOSCRIPT: falls back to EVAL
    lim.reserve("k", Limits(rpm=5), Estimate(), at(1))
    assert lim.usage("k", Limits(), at(1)).requests_last_minute == 2


def test_unreachable_redis_is_limiter_unavailable() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(LimiterUnavailable) as exc:
        RedisLimiter(dead).reserve("k", Limits(rpm=1), Estimate(), at(0))
    assert "redis://" not in str(exc.value)


def test_memory_limiter_persists_budget(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    lim = Limits(budget_nano=usd_to_nano(1.0))
    store = SqliteStore(path)
    gen = store.generation()
    a = MemoryLimiter(SqliteSpendStore(store))
    r = a.reserve("k", lim, Estimate(cost_nano=usd_to_nano(0.5)), at(0))
    a.settle(r, 1, usd_to_nano(0.6), at(1))
    # a second worker on the same file sees the first one's spend after a flush
    b = MemoryLimiter(SqliteSpendStore(SqliteStore(path)))
    a.flush()
    b.flush()
    r2 = b.reserve("k", lim, Estimate(cost_nano=usd_to_nano(0.3)), at(2))
    b.settle(r2, 1, usd_to_nano(0.3), at(3))
    b.close()
    a.close()
    assert store.generation() == gen  # spend is not a key change
    store.close()
    # after a restart the period resumes where it stopped
    c = MemoryLimiter(SqliteSpendStore(SqliteStore(path)))
    assert c.usage("k", lim, at(4)).spent_usd == pytest.approx(0.9)
    with pytest.raises(RateLimited):
        c.reserve("k", lim, Estimate(cost_nano=usd_to_nano(0.2)), at(5))


def test_record_counts_keys_without_limits(limiter: Limiter) -> None:
    lim = Limits(period=BudgetPeriod.DAILY)
    for i in range(3):
        limiter.record("free", lim, 10, usd_to_nano(0.01), at(i * 30))  # 0, 30, 60 s
    u = limiter.usage("free", lim, at(61))
    assert (u.requests_last_minute, u.tokens_last_minute) == (2, 20)  # t=0 left the window
    assert u.spent_usd == pytest.approx(0.03) and u.in_flight == 0
    limiter.record("free", lim, 0, 0, at(200))
    assert limiter.usage("free", lim, at(200)).requests_last_minute == 1


def test_record_counts_a_batch_of_requests(limiter: Limiter) -> None:
    """The native edge's supervisor counts what one read of its records brought per key in
    one call: n requests, their tokens and cost summed."""
    lim = Limits(period=BudgetPeriod.DAILY)
    limiter.record("batch", lim, 160, usd_to_nano(0.05), at(10), 10)
    limiter.record("batch", lim, 16, usd_to_nano(0.005), at(11))
    u = limiter.usage("batch", lim, at(12))
    assert (u.requests_last_minute, u.tokens_last_minute) == (11, 176)
    assert u.spent_usd == pytest.approx(0.055)


def test_record_keeps_the_redis_window_bounded(redis_client: redis.Redis, prefix: str) -> None:
    lim = RedisLimiter(redis_client, prefix=prefix)
    for s in range(0, 300, 5):
        lim.record("free", Limits(), 1, 0, at(s))
    fields = redis_client.hkeys(f"{prefix}{{free}}:w")
    assert len(fields) <= 2 * 13  # only the last ~61 s of buckets remain


def test_a_hanging_redis_times_out() -> None:
    """Redis accepts but never answers (stopped, overloaded): the call is bounded."""
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"

    async def run() -> float:
        lim = AsyncRedisLimiter(connect_async(url), timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            await lim.reserve("k", Limits(rpm=1), Estimate(), at(0))
        took = time.monotonic() - t0
        await lim.aclose()
        return took

    try:
        assert asyncio.run(run()) < 2.0
    finally:
        server.close()
