"""Pure limit arithmetic, with ``now`` passed in: windows, periods, budgets, estimates, prices."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from keyguard.domain.limits import (
    KeyCounters,
    Limits,
    SlidingWindow,
    period_bounds,
    period_id,
)
from keyguard.domain.pricing import (
    Estimate,
    PriceTable,
    estimate_request,
    usage_from_response,
    usd_to_nano,
)
from keyguard.domain.records import BudgetPeriod
from keyguard.errors import ConfigError, RateLimited
from keyguard.limits.prices import load_prices, shipped_prices

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rpm_sliding_window_admits_exactly_rpm_in_any_minute() -> None:
    c = KeyCounters()
    lim = Limits(rpm=5)
    for i in range(5):
        c.reserve(f"r{i}", "k", lim, Estimate(), at(i * 10), 900)
    with pytest.raises(RateLimited) as exc:
        c.reserve("x", "k", lim, Estimate(), at(45), 900)
    assert exc.value.retry_after == pytest.approx(15.0)  # the t=0 request leaves at t=60
    assert exc.value.code == "rate_limit_exceeded"
    c.reserve("y", "k", lim, Estimate(), at(60), 900)  # one left the window
    with pytest.raises(RateLimited):
        c.reserve("z", "k", lim, Estimate(), at(61), 900)


def test_tpm_counts_estimates_then_settled_figures() -> None:
    c = KeyCounters()
    lim = Limits(tpm=1000)
    r1 = c.reserve("a", "k", lim, Estimate(tokens=800), at(0), 900)
    with pytest.raises(RateLimited):
        c.reserve("b", "k", lim, Estimate(tokens=300), at(1), 900)
    c.settle(r1, 100, 0)  # it really used 100
    c.reserve("b", "k", lim, Estimate(tokens=300), at(2), 900)
    with pytest.raises(RateLimited) as exc:
        c.reserve("c", "k", lim, Estimate(tokens=2000), at(3), 900)
    assert "too large" in str(exc.value)


def test_concurrency_and_leases() -> None:
    c = KeyCounters()
    lim = Limits(max_concurrency=2)
    r1 = c.reserve("a", "k", lim, Estimate(), at(0), 30)
    c.reserve("b", "k", lim, Estimate(), at(0), 30)
    with pytest.raises(RateLimited):
        c.reserve("c", "k", lim, Estimate(), at(1), 30)
    c.settle(r1, 0, 0)
    assert not c.settle(r1, 0, 0)  # settling twice is a no-op
    c.reserve("c", "k", lim, Estimate(), at(2), 30)
    with pytest.raises(RateLimited):
        c.reserve("d", "k", lim, Estimate(), at(3), 30)
    c.reserve("d", "k", lim, Estimate(), at(31), 30)  # a and b's leases ran out


def test_expired_leases_are_charged_whatever_order_they_were_taken_in() -> None:
    spend: list[tuple[str, int]] = []
    c = KeyCounters(spend_log=lambda period, nano: spend.append((period, nano)))
    lim = Limits(rpm=100)
    c.reserve("long", "k", lim, Estimate(tokens=5, cost_nano=50), at(0), 600)
    c.reserve("short", "k", lim, Estimate(tokens=7, cost_nano=70), at(1), 10)  # runs out first
    c.expire(at(5).timestamp())
    assert set(c.inflight) == {"long", "short"}
    c.expire(at(12).timestamp())
    assert set(c.inflight) == {"long"} and spend == [(period_id(lim.period, at(0)), 70)]
    assert c.next_expiry == at(600).timestamp()
    c.expire(at(601).timestamp())
    assert not c.inflight and [n for _, n in spend] == [70, 50]
    assert c.next_expiry == float("inf")


def test_budget_holds_estimates_and_never_overshoots() -> None:
    c = KeyCounters()
    lim = Limits(budget_nano=usd_to_nano(1.0), period=BudgetPeriod.DAILY)
    est = Estimate(cost_nano=usd_to_nano(0.3))
    held = [c.reserve(f"r{i}", "k", lim, est, at(i), 900) for i in range(3)]
    with pytest.raises(RateLimited) as exc:
        c.reserve("r4", "k", lim, est, at(4), 900)
    assert exc.value.code == "insufficient_quota"
    assert exc.value.retry_after == 1.0  # only holds block: they settle soon
    for r in held:
        c.settle(r, 10, usd_to_nano(0.33))
    with pytest.raises(RateLimited) as exc:
        c.reserve("r5", "k", lim, est, at(5), 900)
    assert exc.value.retry_after == pytest.approx(12 * 3600 - 5)  # next UTC midnight
    tomorrow = at(12 * 3600 + 1)
    c.reserve("r6", "k", lim, est, tomorrow, 900)


def test_window_prunes_and_retry_after() -> None:
    w = SlidingWindow()
    w.add(100, 3)
    w.add(130, 2)
    assert w.total(159) == 5
    assert w.total(160) == 2
    assert w.retry_after(150.5, 2, 1) == pytest.approx(39.5)  # bucket 130 leaves at 190
    w.add(150, 3)
    assert w.retry_after(150.5, 4, 1) == pytest.approx(39.5)
    assert w.retry_after(150.5, 9, 1) == 0.0


@pytest.mark.parametrize(
    ("period", "now", "start", "end", "ident"),
    [
        (BudgetPeriod.DAILY, T0, "2026-11-27T00:00", "2026-11-28T00:00", "d2026-11-27"),
        (BudgetPeriod.MONTHLY, T0, "2026-11-01T00:00", "2026-12-01T00:00", "m2026-11"),
        (
            BudgetPeriod.MONTHLY,
            datetime(2026, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
            "2027-01-01T00:00",
            "2027-02-01T00:00",
            "m2027-01",
        ),
    ],
)
def test_periods_are_utc(
    period: BudgetPeriod, now: datetime, start: str, end: str, ident: str
) -> None:
    s, e = period_bounds(period, now)
    assert s is not None and e is not None
    assert s.strftime("%Y-%m-%dT%H:%M") == start
    assert e.strftime("%Y-%m-%dT%H:%M") == end
    assert period_id(period, now) == ident
    assert period_bounds(BudgetPeriod.TOTAL, now) == (None, None)
    assert period_id(BudgetPeriod.TOTAL, now) == "total"


def test_prices_lookup_and_cost() -> None:
    p = shipped_prices()
    assert p.price("gpt-4o-mini-2024-07-18") == p.models["gpt-4o-mini"]
    assert p.price("gpt-4o-2024-08-06") == p.models["gpt-4o"]
    assert p.price("gpt-4.5-preview") == p.default  # no '-' boundary after 'gpt-4'
    for name in ("gpt-4.1", "o3", "o4-mini", "gpt-5", "text-embedding-3-small"):
        assert name in p.models
    # 1M input + 1M output of gpt-4o-mini = $0.15 + $0.60
    assert p.cost_nano("gpt-4o-mini", 1_000_000, 1_000_000) == usd_to_nano(0.75)
    # cached input is cheaper
    assert p.cost_nano("gpt-4o", 1_000_000, 0, cached_tokens=1_000_000) == usd_to_nano(1.25)


def test_price_override_file(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"models": {"my-model": {"input": 1, "output": 2}}}))
    t = load_prices(f)
    assert t.cost_nano("my-model", 1_000_000, 1_000_000) == usd_to_nano(3)
    assert t.price("gpt-4o") == shipped_prices().price("gpt-4o")
    g = tmp_path / "prices.toml"
    g.write_text('[default]\ninput = 1.0\noutput = 1.0\n[models."gpt-4o"]\ninput = 9\n')
    t2 = load_prices(g)
    assert t2.price("gpt-4o").input == 9 and t2.price("nope").input == 1.0
    g.write_text('[models."x"]\ninput = -1\n')
    with pytest.raises(ConfigError, match="prices_file"):
        load_prices(g)


def test_estimates() -> None:
    p = PriceTable.from_mapping(
        {"default": {"input": 1, "output": 2}, "models": {"m": {"input": 1, "output": 2}}}
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    est = estimate_request(body, "m", p)
    assert 100 < est.tokens - 50 < 130  # ~400 chars / 4, plus JSON structure
    assert est.cost_nano == p.cost_nano("m", est.tokens - 50, 50)
    e2 = estimate_request({"input": "abcd", "max_output_tokens": 7}, "m", p)
    assert e2.tokens == 1 + 7
    e3 = estimate_request({"input": "abcd"}, "m", p, default_output_tokens=100)
    assert e3.tokens == 101
    e4 = estimate_request({"input": "abcd", "max_tokens": 10, "n": 3}, "m", p)
    assert e4.tokens == 31
    assert estimate_request({"input": "abcd"}, "text-embedding-3-small", p).tokens == 1
    # n without a cap: the default per completion (n=4 used to reserve one default only)
    assert (
        estimate_request({"input": "abcd", "n": 4}, "m", p, default_output_tokens=100).tokens == 401
    )
    assert (
        estimate_request({"input": "abcd", "n": 10**6}, "m", p, default_output_tokens=1).tokens
        == 129
    )
    assert estimate_request(None, "m", p, body_size=400).tokens == 100
    assert estimate_request(None, "m", p, body_size=400, generates=True).tokens == 100 + 1024


def test_usage_parsing() -> None:
    u = usage_from_response(
        {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}
    )
    assert u is not None and (u.input_tokens, u.output_tokens, u.cached_tokens) == (10, 5, 4)
    r = usage_from_response({"input_tokens": 7, "output_tokens": 3, "total_tokens": 10})
    assert r is not None and r.total == 10
    e = usage_from_response({"prompt_tokens": 2, "total_tokens": 2})
    assert e is not None and e.total == 2
    assert usage_from_response(None) is None and usage_from_response({"x": 1}) is None
