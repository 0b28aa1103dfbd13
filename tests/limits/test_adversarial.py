"""Limits as a client holding a limited key (or a buggy upstream) would probe them: every
request is settled or released exactly once, whatever the client, the upstream or Redis does,
and no reported figure can break the counters."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from fakes.openai_upstream import FakeOpenAI
from keyguard.domain.limits import Limits
from keyguard.domain.pricing import COUNTER_MAX, Estimate, estimate_request
from keyguard.domain.records import BudgetPeriod
from keyguard.errors import RateLimited
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.limits import Admission
from keyguard.gateway.server import RunningGateway
from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter
from keyguard.limits.prices import shipped_prices
from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async
from keyguard.limits.redis_sync import RedisLimiter
from keyguard.vault import Vault

from .conftest import REDIS_URL
from .test_gateway_limits import (
    MSG,
    _close_clients,  # noqa: F401 (autouse fixture)
    client,
    gateway_with,
    wait_for,
)
from .test_replicas import RedisServer

PRICES = shipped_prices()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _raw_request(gw: RunningGateway, token: str, path: str, doc: dict[str, Any]) -> socket.socket:
    """Send one request on a raw socket and return it unread (the caller disconnects)."""
    body = json.dumps(doc).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


@pytest.fixture
def redis_admission(redis_client: redis.Redis, prefix: str) -> Iterator[Admission]:
    yield Admission(AsyncRedisLimiter(connect_async(REDIS_URL), prefix=prefix), PRICES)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (it gets paused: never the machine's shared one)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def _pause(server: RedisServer, ms: int) -> None:
    c = redis.Redis.from_url(server.url, socket_timeout=5)
    c.execute_command("CLIENT", "PAUSE", str(ms), "ALL")
    c.close()


# ---- the client disconnects ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["hangup", "timeout"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_no_answer_yet_is_charged(
    gateway_config: GatewayConfig,
    vault: Vault,
    make_key: Any,
    upstream: FakeOpenAI,
    redis_client: redis.Redis,
    prefix: str,
    backend: str,
    how: str,
) -> None:
    """The upstream got the whole request (it will bill it, and may store its answer for the
    client to fetch later): hanging up before the response head, or a generation slower than
    the upstream timeout, must not make it free."""
    mem = MemoryLimiter()
    if backend == "memory":
        admission = Admission(AsyncMemoryLimiter(mem), PRICES)
        reader: Any = mem
    else:
        admission = Admission(AsyncRedisLimiter(connect_async(REDIS_URL), prefix=prefix), PRICES)
        reader = RedisLimiter(redis_client, prefix=prefix)
    key_id, token = make_key(budget_usd=5.0, budget_period="daily")
    limits = Limits(budget_nano=5_000_000_000, period=BudgetPeriod.DAILY)
    doc = {"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 1000}
    est = estimate_request(doc, "gpt-4o-mini", PRICES)
    config = replace(gateway_config, upstream_timeout=0.3 if how == "timeout" else 5.0)
    with gateway_with(config, vault, admission) as gw:
        seen = len(upstream.requests)
        sock = _raw_request(gw, token, "/v1/test/stall", doc)
        wait_for(lambda: any(r["path"] == "/v1/test/stall" for r in upstream.requests[seen:]))
        if how == "timeout":
            assert sock.recv(4096).startswith(b"HTTP/1.1 504")
        sock.close()  # hang up while the upstream works on it (or after the 504)
        wait_for(lambda: reader.usage(key_id, limits, _now()).in_flight == 0)
        wait_for(lambda: reader.usage(key_id, limits, _now()).held_usd == 0)
        usage = reader.usage(key_id, limits, _now())
    assert usage.spent_usd == pytest.approx(est.cost_usd)


# ---- Redis fails between reserve and settle ------------------------------------------------


def test_settle_during_a_redis_blip_is_retried(
    gateway_config: GatewayConfig,
    vault: Vault,
    make_key: Any,
    private_redis: RedisServer,
) -> None:
    """Settling fails while Redis is unreachable for a moment; once it is back the reservation
    is settled, not left to hold the key's only concurrency slot for 15 minutes."""
    admission = Admission(
        AsyncRedisLimiter(connect_async(private_redis.url, timeout=0.3), timeout=0.3), PRICES
    )
    key_id, token = make_key(max_concurrency=1)
    sync = RedisLimiter(redis.Redis.from_url(private_redis.url, socket_timeout=5))
    with gateway_with(gateway_config, vault, admission) as gw:
        sock = _raw_request(gw, token, "/v1/test/slow-stream", {"model": "gpt-4o-mini"})
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        _pause(private_redis, 1000)
        sock.close()  # the stream ends while Redis does not answer: the settle fails
        time.sleep(1.2)
        wait_for(lambda: sync.usage(key_id, Limits(), _now()).in_flight == 0, 10)
        r = client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert r.choices[0].message.content == "Hello from fake"
    sync.close()


# ---- figures that do not fit ---------------------------------------------------------------


def test_huge_usage_from_the_upstream_breaks_nothing(
    gateway_config: GatewayConfig,
    vault: Vault,
    make_key: Any,
    upstream: FakeOpenAI,
    redis_admission: Admission,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """A (buggy) upstream reporting absurd usage: the request is settled (its slot returned),
    the spend is charged, and Redis is not taken for down (no 503 for every other key)."""
    key_id, token = make_key(max_concurrency=2, budget_usd=5.0)
    _, other = make_key(rpm=100)
    lim = RedisLimiter(redis_client, prefix=prefix)
    with gateway_with(gateway_config, vault, redis_admission) as gw:
        upstream.usage_tokens = (10**20, 10**20)
        try:
            client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
        finally:
            upstream.usage_tokens = (3, 3)
        wait_for(lambda: lim.usage(key_id, Limits(), _now()).in_flight == 0)
        assert not redis_admission.degraded
        assert lim.usage(key_id, Limits(), _now()).spent_usd > 5.0  # over budget: denied now
        with pytest.raises(openai.RateLimitError):
            client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
        client(gw, other).chat.completions.create(model="gpt-4o-mini", messages=MSG)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_absurd_max_tokens_without_usage_breaks_nothing(
    gateway_config: GatewayConfig,
    vault: Vault,
    make_key: Any,
    redis_client: redis.Redis,
    prefix: str,
    backend: str,
) -> None:
    """A request-rate-only key sends max_tokens=10**30 to an endpoint whose answer reports no
    usage: it is charged an estimate the counters can hold, and nothing else breaks."""
    mem = MemoryLimiter()
    if backend == "memory":
        admission = Admission(AsyncMemoryLimiter(mem), PRICES)
        reader: Any = mem
    else:
        admission = Admission(AsyncRedisLimiter(connect_async(REDIS_URL), prefix=prefix), PRICES)
        reader = RedisLimiter(redis_client, prefix=prefix)
    key_id, token = make_key(rpm=100)
    _, other = make_key(rpm=100)
    with gateway_with(gateway_config, vault, admission) as gw:
        for _ in range(3):
            sock = _raw_request(
                gw, token, "/v1/test/headers", {"model": "gpt-4o-mini", "max_tokens": 10**30}
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.close()
        wait_for(lambda: reader.usage(key_id, Limits(), _now()).in_flight == 0)
        assert not admission.degraded
        usage = reader.usage(key_id, Limits(), _now())
        assert 0 < usage.spent_usd < 1e7 and usage.tokens_last_minute < 2**63
        client(gw, other).chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_spend_counter_saturates_instead_of_failing(redis_client: redis.Redis, prefix: str) -> None:
    """A budget counter at the top of Redis' integer range: settling and recording saturate it
    (an error half-way through the script would leave the request's slot taken)."""
    lim = RedisLimiter(redis_client, prefix=prefix)
    limits = Limits(rpm=10, period=BudgetPeriod.TOTAL)
    redis_client.hset(f"{prefix}{{k}}:b:total", "spent", str(COUNTER_MAX - 5))
    now = _now()
    lim.settle(lim.reserve("k", limits, Estimate(), now), 10, 10**12, now)
    lim.record("k", limits, 10, 10**12, now)
    usage = lim.usage("k", limits, now)
    assert usage.in_flight == 0 and usage.spent_usd == COUNTER_MAX / 1e9


# ---- the clock ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_clock_stepping_back_does_not_lock_the_key_out(
    redis_client: redis.Redis, prefix: str, backend: str
) -> None:
    """The clock steps back an hour (an NTP correction): the requests counted "in the future"
    must not hold the key's request window shut for the hour."""
    limiter: Any = (
        MemoryLimiter() if backend == "memory" else RedisLimiter(redis_client, prefix=prefix)
    )
    limits = Limits(rpm=2, tpm=1000)
    t = _now()
    for _ in range(2):
        limiter.settle(limiter.reserve("k", limits, Estimate(tokens=400), t), 400, 0, t)
    with pytest.raises(RateLimited):
        limiter.reserve("k", limits, Estimate(tokens=400), t)
    back = t - timedelta(hours=1)
    res = limiter.reserve("k", limits, Estimate(tokens=400), back)
    limiter.settle(res, 400, 0, back)
    assert limiter.usage("k", limits, back).requests_last_minute == 1


# ---- responses too big for the JSON copy ----------------------------------------------------


def test_usage_of_a_json_answer_bigger_than_the_copy_is_read() -> None:
    """A client can make an answer outgrow the 4 MiB copy (``logprobs`` with ``top_logprobs``:
    about 1 KiB of JSON per token) without max_tokens: its usage must still be read, not the
    1024-token default estimate charged for thousands of tokens."""
    from keyguard.gateway.usage import UsageTap

    token = {"token": "x", "logprob": -0.1, "bytes": [120]}
    content = [{**token, "top_logprobs": [token] * 20} for _ in range(6000)]
    doc = {
        "id": "chatcmpl-big",
        "choices": [
            {"index": 0, "message": {"content": "x" * 6000}, "logprobs": {"content": content}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6000, "total_tokens": 6012},
    }
    body = json.dumps(doc).encode()
    assert len(body) > 4 * 1024 * 1024
    tap = UsageTap()
    tap.start(200, [(b"content-type", b"application/json")], len(body))
    out = b"".join(tap.feed(body[i : i + 65536]) for i in range(0, len(body), 65536)) + tap.end()
    assert out == body
    assert tap.usage is not None and tap.usage.output_tokens == 6000
