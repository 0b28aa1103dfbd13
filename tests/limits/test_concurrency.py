"""Many threads and processes reserving against one budget never overshoot it by more than one
request's estimate, and an rpm limit admits exactly rpm requests."""

from __future__ import annotations

import multiprocessing
import random
import threading
from datetime import datetime, timezone

import pytest
import redis

from keyguard.domain.limits import Limits
from keyguard.domain.pricing import Estimate, usd_to_nano
from keyguard.domain.records import BudgetPeriod
from keyguard.errors import RateLimited
from keyguard.limits.memory import MemoryLimiter
from keyguard.limits.ports import Limiter
from keyguard.limits.redis_sync import RedisLimiter

from .conftest import REDIS_URL

BUDGET = usd_to_nano(1.0)
EST = Estimate(tokens=100, cost_nano=usd_to_nano(0.03))
LIMITS = Limits(budget_nano=BUDGET, period=BudgetPeriod.DAILY, rpm=10_000)


def _hammer(limiter: Limiter, seed: int, attempts: int) -> tuple[int, int]:
    """Reserve/settle until denied ``attempts`` times; returns (admitted, nano-USD spent)."""
    rnd = random.Random(seed)
    admitted = spent = denied = 0
    while denied < attempts:
        now = datetime.now(timezone.utc)
        try:
            res = limiter.reserve("shared", LIMITS, EST, now)
        except RateLimited:
            denied += 1
            continue
        cost = rnd.randint(EST.cost_nano // 2, EST.cost_nano)  # real cost <= estimate
        limiter.settle(res, 50, cost, datetime.now(timezone.utc))
        admitted += 1
        spent += cost
    return admitted, spent


def _threads(limiter: Limiter, n: int) -> list[tuple[int, int]]:
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        r = _hammer(limiter, i, 20)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _process_main(prefix: str, seed: int, q: multiprocessing.Queue[tuple[int, int]]) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    q.put(_hammer(RedisLimiter(client, prefix=prefix), seed, 20))
    client.close()


def _check(limiter: Limiter, results: list[tuple[int, int]]) -> None:
    spent = sum(s for _, s in results)
    usage = limiter.usage("shared", LIMITS, datetime.now(timezone.utc))
    assert usage.spent_usd == pytest.approx(spent / 1e9)
    assert usage.held_usd == 0 and usage.in_flight == 0
    assert spent <= BUDGET + EST.cost_nano
    assert spent > BUDGET - 2 * EST.cost_nano  # and the budget was actually used up
    print(f"admitted {sum(a for a, _ in results)}, spent ${spent / 1e9:.4f} of $1.00")


def test_threads_memory() -> None:
    limiter = MemoryLimiter()
    _check(limiter, _threads(limiter, 16))


def test_threads_redis(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis_client, prefix=prefix)
    _check(limiter, _threads(limiter, 16))


def test_processes_redis(redis_client: redis.Redis, prefix: str) -> None:
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(prefix, i, q)) for i in range(6)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    _check(RedisLimiter(redis_client, prefix=prefix), results)


def test_rpm_exact_under_contention(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RedisLimiter(redis_client, prefix=prefix)
    lim = Limits(rpm=60)
    now = datetime.now(timezone.utc)
    admitted = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(20):
            try:
                limiter.reserve("rpm", lim, Estimate(), now)
            except RateLimited:
                continue
            with lock:
                admitted.append(1)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(admitted) == 60
