"""Limits through the real gateway with the openai SDK: denials, usage settlement (JSON and
SSE, with and without the client's include_usage), Redis down (fail closed / degrade)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
import redis

from fakes.openai_upstream import FakeOpenAI
from keyguard.domain.limits import Limits
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.limits import Admission
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter
from keyguard.limits.prices import shipped_prices
from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async
from keyguard.limits.redis_sync import RedisLimiter
from keyguard.vault import Vault

from .conftest import REDIS_URL

MSG = [{"role": "user", "content": "hi"}]
PRICE = shipped_prices().price("gpt-4o-mini")


@contextmanager
def gateway_with(
    config: GatewayConfig, vault: Vault, admission: Admission
) -> Iterator[RunningGateway]:
    with run_in_thread(config, vault, limits=admission) as gw:
        yield gw
        asyncio.run_coroutine_threadsafe(admission.aclose(), gw.loop).result(5)


_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(gw: RunningGateway, token: str) -> openai.OpenAI:
    c = openai.OpenAI(api_key=token, base_url=gw.url + "/v1", max_retries=0)
    _CLIENTS.append(c)
    return c


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def redis_gateway(
    gateway_config: GatewayConfig, vault: Vault, redis_client: redis.Redis, prefix: str
) -> Iterator[tuple[RunningGateway, RedisLimiter]]:
    admission = Admission(
        AsyncRedisLimiter(connect_async(REDIS_URL), prefix=prefix), shipped_prices()
    )
    with gateway_with(gateway_config, vault, admission) as gw:
        yield gw, RedisLimiter(redis_client, prefix=prefix)


def test_rpm_denial_is_openai_shaped_429(
    redis_gateway: tuple[RunningGateway, RedisLimiter], make_key: Any
) -> None:
    gw, _ = redis_gateway
    _, token = make_key(rpm=2)
    c = client(gw, token)
    for _ in range(2):
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.RateLimitError) as exc:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    r = exc.value.response
    assert 1 <= int(r.headers["retry-after"]) <= 60
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert "2 requests per minute" in err["message"]


def test_json_usage_is_settled(
    redis_gateway: tuple[RunningGateway, RedisLimiter], make_key: Any, upstream: FakeOpenAI
) -> None:
    gw, lim = redis_gateway
    key_id, token = make_key(tpm=100_000, budget_usd=5.0)
    upstream.usage_tokens = (1000, 500)
    try:
        client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    finally:
        upstream.usage_tokens = (3, 3)
    limits = Limits(tpm=100_000)
    wait_for(lambda: lim.usage(key_id, limits, _now()).in_flight == 0)
    u = lim.usage(key_id, limits, _now())
    assert u.tokens_last_minute == 1500
    assert u.spent_usd == pytest.approx(PRICE.cost_nano(1000, 500) / 1e9)


@pytest.mark.parametrize("client_asks", [False, True])
def test_streaming_usage(
    redis_gateway: tuple[RunningGateway, RedisLimiter],
    make_key: Any,
    upstream: FakeOpenAI,
    client_asks: bool,
) -> None:
    gw, lim = redis_gateway
    key_id, token = make_key(budget_usd=5.0)
    upstream.usage_tokens = (40, 2)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if client_asks else {}
    try:
        stream = client(gw, token).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, stream=True, **extra
        )
        chunks = list(stream)
    finally:
        upstream.usage_tokens = (3, 3)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello from fake"
    usage_chunks = [ch for ch in chunks if ch.usage is not None]
    if client_asks:
        assert len(usage_chunks) == 1 and usage_chunks[0].usage.total_tokens == 42
        assert chunks[-1].choices == []
    else:
        assert usage_chunks == [] and all(ch.choices for ch in chunks)
    # keyguard asked the upstream for usage either way
    assert upstream.chat_bodies[-1]["stream_options"] == {"include_usage": True}
    wait_for(lambda: lim.usage(key_id, Limits(), _now()).in_flight == 0)
    u = lim.usage(key_id, Limits(), _now())
    assert u.tokens_last_minute == 42
    assert u.spent_usd == pytest.approx(PRICE.cost_nano(40, 2) / 1e9)


def test_budget_denial(
    redis_gateway: tuple[RunningGateway, RedisLimiter], make_key: Any, upstream: FakeOpenAI
) -> None:
    gw, _ = redis_gateway
    _, token = make_key(budget_usd=0.001, budget_period="daily")
    c = client(gw, token)
    upstream.usage_tokens = (1000, 1000)  # $0.00075 at gpt-4o-mini prices
    try:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=100)
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=1000)
    finally:
        upstream.usage_tokens = (3, 3)
    assert exc.value.response.json()["error"]["code"] == "insufficient_quota"


def test_redis_down_fails_closed_then_degrades(
    gateway_config: GatewayConfig, vault: Vault, make_key: Any
) -> None:
    _, token = make_key(rpm=1000)
    dead = "redis://127.0.0.1:1/0"
    closed = Admission(AsyncRedisLimiter(connect_async(dead, timeout=0.2)), shipped_prices())
    with gateway_with(gateway_config, vault, closed) as gw:
        for _ in range(3):  # the first probes Redis, the next fail fast during the backoff
            with pytest.raises(openai.InternalServerError) as exc:
                client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
            assert exc.value.status_code == 503
            err = exc.value.response.json()["error"]
            assert err["code"] == "limits_unavailable" and "Redis" in err["message"]
    degrade = Admission(
        AsyncRedisLimiter(connect_async(dead, timeout=0.2)),
        shipped_prices(),
        fallback=AsyncMemoryLimiter(MemoryLimiter()),
    )
    with gateway_with(gateway_config, vault, degrade) as gw:
        r = client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert r.choices[0].message.content == "Hello from fake"
        assert degrade.degraded


def test_memory_limiter_in_gateway(
    gateway_config: GatewayConfig, vault: Vault, make_key: Any
) -> None:
    mem = MemoryLimiter()
    _, token = make_key(rpm=1)
    admission = Admission(AsyncMemoryLimiter(mem), shipped_prices())
    with gateway_with(gateway_config, vault, admission) as gw:
        c = client(gw, token)
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_rate_only_key_reserves_nothing_but_charges_the_estimate_without_usage(
    vault: Vault, make_key: Any
) -> None:
    """A key with only a request-rate limit takes no token/cost estimate up front; a response
    that reports no usage is still charged the estimate when it settles."""
    from keyguard.gateway.forward import PreparedBody

    mem = MemoryLimiter()
    key = vault.get_key(make_key(rpm=5)[0])
    admission = Admission(AsyncMemoryLimiter(mem), shipped_prices())
    data = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}'
    body = PreparedBody(data=data, model="gpt-4o-mini")
    now = _now()
    ticket = asyncio.run(admission.admit(key, "/v1/chat/completions", body, now))
    assert ticket.reservation.tokens == 0 and ticket.reservation.cost_nano == 0
    ticket.tap.start(200, [(b"content-type", b"application/json")], 2)
    ticket.tap.feed(b"{}")
    ticket.tap.end()
    admission.finish(ticket, now, stopped=None)
    usage = mem.usage(key.key_id, Limits.of(key), now)
    assert usage.in_flight == 0 and usage.requests_last_minute == 1
    assert usage.tokens_last_minute == ticket.estimate.tokens > 0
    assert usage.spent_usd == ticket.estimate.cost_usd > 0


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def test_stream_rewrite_keeps_odd_json_intact(
    redis_gateway: tuple[RunningGateway, RedisLimiter], make_key: Any, upstream: FakeOpenAI
) -> None:
    import http.client
    import json

    gw, _ = redis_gateway
    _, token = make_key(rpm=100)
    odd = "lone \ud800 surrogate, \u00e9, \U0001f600"
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": odd}], "stream": True}
    )  # ASCII with \u escapes: the SDK itself refuses to send a lone surrogate
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/chat/completions", body, headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert (
        resp.status == 200
        and b"[DONE]" in data
        and b'"usage"' not in data.replace(b'"usage": null', b"")
    )
    assert upstream.chat_bodies[-1]["messages"][0]["content"] == odd
