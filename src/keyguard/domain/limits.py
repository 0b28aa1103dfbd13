"""Limits of a virtual key and the arithmetic that enforces them. Pure: ``now`` is an argument.

* requests and tokens per minute: a sliding window of 60 one-second buckets; a request is
  admitted when the window's total plus its share stays within the limit, so at most ``rpm``
  requests start in any 60 s (to the second).
* concurrency: reservations in flight, each with a lease (a crashed replica's reservations
  expire instead of leaking).
* budget: nano-USD spent in the current period (UTC day, UTC month, or all time) plus the
  estimates ``held`` by reservations in flight; admission needs ``spent + held + estimate <=
  budget``, so concurrent requests overshoot only by what the real cost exceeds the estimate.

:class:`KeyCounters` is the whole state machine for one key; the in-process limiter keeps one
per key under a lock, and the Redis Lua scripts implement the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from keyguard.domain.pricing import COUNTER_MAX, Estimate, nano_to_usd, usd_to_nano
from keyguard.domain.records import BudgetPeriod, VirtualKey
from keyguard.errors import RateLimited

WINDOW_S = 60
DEFAULT_LEASE_S = 900.0


@dataclass(frozen=True)
class Limits:
    """The limits of one key, in the units the counters use."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_nano: int | None = None
    period: BudgetPeriod = BudgetPeriod.MONTHLY

    @classmethod
    def of(cls, key: VirtualKey) -> Limits:
        budget = usd_to_nano(key.budget_usd) if key.budget_usd is not None else None
        return cls(key.rpm, key.tpm, key.max_concurrency, budget, key.budget_period)

    @property
    def active(self) -> bool:
        """True when any limit is set (otherwise admission has nothing to count)."""
        return any(
            v is not None for v in (self.rpm, self.tpm, self.max_concurrency, self.budget_nano)
        )


def period_bounds(period: BudgetPeriod, now: datetime) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` of the budget period holding ``now`` (UTC); ``(None, None)`` for total."""
    now = now.astimezone(timezone.utc)
    if period is BudgetPeriod.DAILY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period is BudgetPeriod.MONTHLY:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if start.month == 12:
            return start, start.replace(year=start.year + 1, month=1)
        return start, start.replace(month=start.month + 1)
    return None, None


def period_id(period: BudgetPeriod, now: datetime) -> str:
    """A stable name for the period holding ``now``: ``d2026-11-27``, ``m2026-11``, ``total``."""
    if period is BudgetPeriod.TOTAL:
        return "total"
    memo_key = (period, now.timestamp() // 86400)  # the UTC day (POSIX days are 86400 s)
    name = _PERIOD_MEMO.get(memo_key)
    if name is not None:
        return name
    day = now.astimezone(timezone.utc).date()
    if period is BudgetPeriod.DAILY:
        name = f"d{day.year:04d}-{day.month:02d}-{day.day:02d}"
    else:
        name = f"m{day.year:04d}-{day.month:02d}"
    if len(_PERIOD_MEMO) >= 64:
        _PERIOD_MEMO.clear()
    _PERIOD_MEMO[memo_key] = name
    return name


#: period names by (period, UTC day number): one lookup per request instead of formatting
_PERIOD_MEMO: dict[tuple[BudgetPeriod, float], str] = {}


class SlidingWindow:
    """Amounts in one-second buckets over the last :data:`WINDOW_S` seconds.

    Buckets more than :data:`WINDOW_S` seconds *ahead* of ``now`` are dropped too: they are
    left from before the clock stepped back, and would otherwise keep the window full until the
    clock caught up with them (an hour, after a one-hour step)."""

    __slots__ = ("buckets", "high", "low")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.low: float = float("inf")  # no bucket is older than this second
        self.high: float = float("-inf")  # ... nor newer than this one

    def prune(self, now_s: int) -> None:
        oldest, newest = now_s - WINDOW_S, now_s + WINDOW_S
        if self.low > oldest and self.high <= newest:  # the common case: no scan
            return
        for sec in [s for s in self.buckets if s <= oldest or s > newest]:
            del self.buckets[sec]
        self.low = min(self.buckets, default=float("inf"))
        self.high = max(self.buckets, default=float("-inf"))

    def total(self, now_s: int) -> int:
        self.prune(now_s)
        return sum(self.buckets.values())

    def add(self, sec: int, amount: int) -> None:
        self.buckets[sec] = max(0, self.buckets.get(sec, 0) + amount)
        if sec < self.low:
            self.low = sec
        if sec > self.high:
            self.high = sec

    def retry_after(self, now: float, limit: int, need: int) -> float:
        """Seconds until ``total + need <= limit`` as old buckets leave the window."""
        return window_retry_after(self.buckets.items(), now, limit, need)


def window_retry_after(
    buckets: Iterable[tuple[int, int]], now: float, limit: int, need: int
) -> float:
    """Seconds until the amounts in ``buckets`` (second, amount) leave room for ``need``."""
    items = sorted(buckets)
    total = sum(a for _, a in items)
    if total + need <= limit:
        return 0.0
    for sec, amount in items:
        total -= amount
        if total + need <= limit:
            return max(0.0, sec + WINDOW_S - now)
    return float(WINDOW_S)


@dataclass(frozen=True)
class Reservation:
    """What admission took for one request; hand it back to ``settle`` or ``release``."""

    rid: str
    key_id: str
    second: int
    tokens: int
    cost_nano: int
    period: str
    lease_until: float
    counted: bool = True  # False: the key has no limits, nothing was taken


@dataclass(frozen=True)
class Usage:
    """A key's counters at one moment (what ``keyguard key usage`` shows)."""

    key_id: str
    requests_last_minute: int
    tokens_last_minute: int
    in_flight: int
    period: str
    spent_usd: float
    held_usd: float
    budget_usd: float | None
    period_start: datetime | None = None
    period_end: datetime | None = None


def deny(reason: str, key_id: str, limits: Limits, retry_after: float) -> RateLimited:
    """The 429 for ``reason`` (``rpm``, ``tpm``, ``tpm_request``, ``concurrency``, ``budget``)."""
    retry = max(retry_after, 0.001)
    if reason == "rpm":
        msg = f"rate limit reached for key {key_id}: {limits.rpm} requests per minute"
    elif reason == "tpm":
        msg = f"rate limit reached for key {key_id}: {limits.tpm} tokens per minute"
    elif reason == "tpm_request":
        msg = f"request too large for key {key_id}: it may use more than {limits.tpm} tokens"
    elif reason == "concurrency":
        msg = f"too many concurrent requests for key {key_id} (limit {limits.max_concurrency})"
    else:
        budget = nano_to_usd(limits.budget_nano or 0)
        return RateLimited(
            f"budget of ${budget:.2f} ({limits.period.value}) exhausted for key {key_id}",
            retry_after=retry,
            code="insufficient_quota",
        )
    return RateLimited(msg, retry_after=retry, code="rate_limit_exceeded")


_INF = float("inf")


def budget_retry_after(limits: Limits, now: datetime, spent: int, est: int) -> float:
    """Retry-After for a budget denial: the period's end, or soon when only holds block."""
    if limits.budget_nano is not None and spent + est <= limits.budget_nano:
        return 1.0  # requests in flight hold the rest; they settle shortly
    _, end = period_bounds(limits.period, now)
    return (end - now).total_seconds() if end is not None else 86400.0


@dataclass
class KeyCounters:
    """The counters of one key (in-process limiter); every method takes ``now``.

    ``spend_log`` (when set) receives ``(period, nano-USD)`` for every increment of ``spent``,
    so a caller can persist increments without diffing the dict."""

    requests: SlidingWindow = field(default_factory=SlidingWindow)
    tokens: SlidingWindow = field(default_factory=SlidingWindow)
    inflight: dict[str, Reservation] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)  # period id -> nano-USD
    held: dict[str, int] = field(default_factory=dict)
    spend_log: Callable[[str, int], None] | None = field(default=None, repr=False)
    #: no lease in ``inflight`` runs out before this (``expire`` skips the scan until then)
    next_expiry: float = float("inf")

    def expire(self, ts: float) -> None:
        """Drop reservations whose lease ran out, charging their estimate (the safe side)."""
        if ts < self.next_expiry:
            return
        for res in [r for r in self.inflight.values() if r.lease_until <= ts]:
            self.settle(res, res.tokens, res.cost_nano)
        self.next_expiry = min((r.lease_until for r in self.inflight.values()), default=_INF)

    def reserve(
        self, rid: str, key_id: str, limits: Limits, est: Estimate, now: datetime, lease_s: float
    ) -> Reservation:
        """Take ``est`` or raise :class:`RateLimited` (nothing is taken on denial)."""
        ts = now.timestamp()
        sec = int(ts)
        self.expire(ts)
        if limits.rpm is not None and self.requests.total(sec) + 1 > limits.rpm:
            raise deny("rpm", key_id, limits, self.requests.retry_after(ts, limits.rpm, 1))
        if limits.tpm is not None:
            if est.tokens > limits.tpm:
                raise deny("tpm_request", key_id, limits, float(WINDOW_S))
            if self.tokens.total(sec) + est.tokens > limits.tpm:
                wait = self.tokens.retry_after(ts, limits.tpm, est.tokens)
                raise deny("tpm", key_id, limits, wait)
        if limits.max_concurrency is not None and len(self.inflight) >= limits.max_concurrency:
            raise deny("concurrency", key_id, limits, 1.0)
        period = period_id(limits.period, now)
        if limits.budget_nano is not None:
            spent, held = self.spent.get(period, 0), self.held.get(period, 0)
            if spent + held + est.cost_nano > limits.budget_nano:
                wait = budget_retry_after(limits, now, spent, est.cost_nano)
                raise deny("budget", key_id, limits, wait)
        lease_until = ts + lease_s
        res = Reservation(rid, key_id, sec, est.tokens, est.cost_nano, period, lease_until)
        self.requests.add(sec, 1)
        if est.tokens:
            self.tokens.add(sec, est.tokens)
        if est.cost_nano:
            self.held[period] = self.held.get(period, 0) + est.cost_nano
        self.inflight[rid] = res
        if lease_until < self.next_expiry:
            self.next_expiry = lease_until
        return res

    def record(
        self, limits: Limits, tokens: int, cost_nano: int, now: datetime, requests: int = 1
    ) -> None:
        """Count ``requests`` finished requests (one, or a batch with summed tokens and cost)
        of a key without limits (nothing to reserve)."""
        sec = int(now.timestamp())
        self.requests.prune(sec)
        self.tokens.prune(sec)
        self.requests.add(sec, max(requests, 0))
        self.tokens.add(sec, max(tokens, 0))
        self._spend(period_id(limits.period, now), max(cost_nano, 0))

    def settle(self, res: Reservation, tokens: int, cost_nano: int) -> bool:
        """Replace the estimate by the real figures; False when ``res`` was already settled."""
        if self.inflight.pop(res.rid, None) is None:
            return False
        if tokens != res.tokens:
            self.tokens.add(res.second, tokens - res.tokens)
        if res.cost_nano:
            self.held[res.period] = max(0, self.held.get(res.period, 0) - res.cost_nano)
        self._spend(res.period, max(cost_nano, 0))
        return True

    def _spend(self, period: str, nano: int) -> None:
        self.spent[period] = min(self.spent.get(period, 0) + nano, COUNTER_MAX)  # as Redis
        if nano and self.spend_log is not None:
            self.spend_log(period, nano)
