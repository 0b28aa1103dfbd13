"""The Redis side of the limiter: key layout, Lua scripts, arguments and replies.

Per virtual key (all under one hash tag, so a cluster keeps them in one slot)::

    {prefix}{<key id>}:w           hash   r<second> -> requests, t<second> -> tokens (60 s TTL)
    {prefix}{<key id>}:f           zset   reservation id -> lease end (ms)  (in flight)
    {prefix}{<key id>}:i           hash   reservation id -> "second|tokens|cost|period"
    {prefix}{<key id>}:b:<period>  hash   spent, held (nano-USD); TTL past the period's end

The scripts do what :class:`keyguard.domain.limits.KeyCounters` does, atomically. Integers
that may be large (nano-USD) go to ``HINCRBY`` as the strings they arrived as, never through a
Lua number (which would print as ``1e+15``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyguard.domain.limits import (
    WINDOW_S,
    Limits,
    Reservation,
    Usage,
    budget_retry_after,
    deny,
    period_bounds,
    period_id,
)
from keyguard.domain.pricing import MAX_COST_NANO, MAX_TOKENS, Estimate, nano_to_usd
from keyguard.domain.records import BudgetPeriod

#: arguments travel as one "|"-joined string (cheaper for the client to encode than twelve)
_UNPACK = """
local packed = ARGV[1]
local ARGV = {}
for v in string.gmatch(packed .. '|', '([^|]*)|') do ARGV[#ARGV + 1] = v end
"""

#: add nano-USD to a budget counter, saturating at the largest integer Redis holds (an error
#: half-way through a script would leave the writes before it in place)
_SPEND_FN = """
local function spend(bk, cost)
  if cost == '0' then return end
  local r = redis.pcall('HINCRBY', bk, 'spent', cost)
  if type(r) == 'table' and r.err then
    redis.call('HSET', bk, 'spent', '9223372036854775807')
  end
end
"""

_SETTLE_FN = (
    _SPEND_FN
    + """
local function settle(win, fl, info, bprefix, now_s, r, tokens, cost)
  local data = redis.call('HGET', info, r)
  redis.call('ZREM', fl, r)
  if not data then return 0 end
  redis.call('HDEL', info, r)
  local sec, t, c, p = string.match(data, '^(%d+)|(%d+)|(%d+)|(.*)$')
  if tonumber(sec) > now_s - 60 then
    local f = 't' .. sec
    local v = tonumber(redis.call('HGET', win, f) or '0') + tonumber(tokens) - tonumber(t)
    if v < 0 then v = 0 end
    if redis.call('EXISTS', win) == 1 then redis.call('HSET', win, f, string.format('%d', v)) end
  end
  local bk = bprefix .. p
  if c ~= '0' then redis.call('HINCRBY', bk, 'held', '-' .. c) end
  spend(bk, cost)
  return 1
end
local function expire(win, fl, info, bprefix, now_s, now_ms)
  for _, r in ipairs(redis.call('ZRANGEBYSCORE', fl, '-inf', now_ms)) do
    local data = redis.call('HGET', info, r)
    if data then
      local _, t, c = string.match(data, '^(%d+)|(%d+)|(%d+)|')
      settle(win, fl, info, bprefix, now_s, r, t, c)
    else
      redis.call('ZREM', fl, r)
    end
  end
end
"""
)

RESERVE = (
    _UNPACK
    + _SETTLE_FN
    + """
local win, fl, info = KEYS[1], KEYS[2], KEYS[3]
local bprefix, now_ms, rid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local rpm, tpm, conc, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local est_t, est_c, period = ARGV[8], ARGV[9], ARGV[10]
local lease_ms, bttl = tonumber(ARGV[11]), tonumber(ARGV[12])
local now_s = math.floor(now_ms / 1000)
expire(win, fl, info, bprefix, now_s, now_ms)
local h = redis.call('HGETALL', win)
local reqs, toks, rsum, tsum = {}, {}, 0, 0
for i = 1, #h, 2 do
  local f, v = h[i], tonumber(h[i + 1])
  local sec = tonumber(string.sub(f, 2))
  if sec <= now_s - 60 or sec > now_s + 60 then  -- past, or left from before a clock step back
    redis.call('HDEL', win, f)
  elseif string.sub(f, 1, 1) == 'r' then
    rsum = rsum + v; reqs[#reqs + 1] = {sec, v}
  else
    tsum = tsum + v; toks[#toks + 1] = {sec, v}
  end
end
local function retry(list, total, limit, need)
  table.sort(list, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(list) do
    total = total - e[2]
    if total + need <= limit then return (e[1] + 60) * 1000 - now_ms end
  end
  return 60000
end
if rpm >= 0 and rsum + 1 > rpm then return {0, 'rpm', retry(reqs, rsum, rpm, 1)} end
if tpm >= 0 then
  if tonumber(est_t) > tpm then return {0, 'tpm_request', 60000} end
  if tsum + tonumber(est_t) > tpm then
    return {0, 'tpm', retry(toks, tsum, tpm, tonumber(est_t))}
  end
end
if conc >= 0 and redis.call('ZCARD', fl) >= conc then return {0, 'concurrency', 1000} end
local bk = bprefix .. period
local b = redis.call('HMGET', bk, 'spent', 'held')
if budget >= 0 then
  local spent, held = tonumber(b[1] or '0'), tonumber(b[2] or '0')
  if spent + held + tonumber(est_c) > budget then
    return {0, 'budget', 0, tostring(b[1] or '0')}
  end
end
redis.call('HINCRBY', win, 'r' .. now_s, 1)
redis.call('HINCRBY', win, 't' .. now_s, est_t)
redis.call('PEXPIRE', win, 61000)
redis.call('ZADD', fl, now_ms + lease_ms, rid)
redis.call('HSET', info, rid, now_s .. '|' .. est_t .. '|' .. est_c .. '|' .. period)
redis.call('PEXPIRE', fl, lease_ms + 60000)
redis.call('PEXPIRE', info, lease_ms + 60000)
redis.call('HINCRBY', bk, 'held', est_c)
if bttl > 0 then redis.call('EXPIRE', bk, bttl) end
return {1, now_s}
"""
)

SETTLE = (
    _UNPACK
    + _SETTLE_FN
    + """
local now_ms = tonumber(ARGV[5])
local now_s = math.floor(now_ms / 1000)
expire(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now_s, now_ms)
return settle(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now_s, ARGV[2], ARGV[3], ARGV[4])
"""
)

#: count a finished request of a key without limits: one round trip, nothing to check. Fields
#: 61-120 s old are deleted by name (a hash idle for 61 s expires as a whole), so the window
#: stays bounded without reading it.
RECORD = (
    _UNPACK
    + _SPEND_FN
    + """
local win, now_ms = KEYS[1], tonumber(ARGV[2])
local now_s = math.floor(now_ms / 1000)
local old = {}
for s = now_s - 120, now_s - 61 do old[#old + 1] = 'r' .. s; old[#old + 1] = 't' .. s end
redis.call('HDEL', win, unpack(old))
redis.call('HINCRBY', win, 'r' .. now_s, tonumber(ARGV[7] or '1'))
if ARGV[3] ~= '0' then redis.call('HINCRBY', win, 't' .. now_s, ARGV[3]) end
redis.call('PEXPIRE', win, 61000)
local bk = ARGV[1] .. ARGV[5]
spend(bk, ARGV[4])
local bttl = tonumber(ARGV[6])
if bttl > 0 then redis.call('EXPIRE', bk, bttl) end
return 1
"""
)

#: how long a period's budget counter outlives the period (for ``key usage`` afterwards)
_KEEP_S = {BudgetPeriod.DAILY: 8 * 86400, BudgetPeriod.MONTHLY: 40 * 86400}


@dataclass(frozen=True)
class KeyNames:
    """The Redis keys of one virtual key."""

    window: str
    inflight: str
    info: str
    budget_prefix: str

    @classmethod
    def of(cls, prefix: str, key_id: str) -> KeyNames:
        if "|" in prefix or "|" in key_id:
            raise ValueError("a limits key prefix or key id must not contain '|'")
        base = f"{prefix}{{{key_id}}}:"
        return cls(base + "w", base + "f", base + "i", base + "b:")

    @property
    def keys(self) -> list[str]:
        return [self.window, self.inflight, self.info]


def pack(args: list[str]) -> list[str]:
    """The scripts' ARGV: one "|"-joined string."""
    return ["|".join(args)]


def _tokens(value: int) -> str:
    return str(min(max(int(value), 0), 2 * MAX_TOKENS))  # input + output


def _cost(value: int) -> str:
    return str(min(max(int(value), 0), MAX_COST_NANO))


def _opt(value: int | None) -> str:
    return "-1" if value is None else str(int(value))


def _budget_ttl(limits: Limits, now: datetime) -> int:
    _, end = period_bounds(limits.period, now)
    return int((end - now).total_seconds()) + _KEEP_S[limits.period] if end is not None else 0


def record_args(
    names: KeyNames, limits: Limits, tokens: int, cost: int, now: datetime, requests: int = 1
) -> list[str]:
    """ARGV of RECORD: ``requests`` finished requests (one, or a batch: tokens and cost summed;
    each sum is capped like one request's)."""
    return pack(
        [
            names.budget_prefix,
            str(int(now.timestamp() * 1000)),
            _tokens(tokens),
            _cost(cost),
            period_id(limits.period, now),
            str(_budget_ttl(limits, now)),
            str(min(max(requests, 0), 1_000_000)),
        ]
    )


def reserve_args(
    names: KeyNames, rid: str, limits: Limits, est: Estimate, now: datetime, lease_s: float
) -> list[str]:
    ttl = _budget_ttl(limits, now)
    return pack(
        [
            names.budget_prefix,
            str(int(now.timestamp() * 1000)),
            rid,
            _opt(limits.rpm),
            _opt(limits.tpm),
            _opt(limits.max_concurrency),
            _opt(limits.budget_nano),
            _tokens(est.tokens),
            _cost(est.cost_nano),
            period_id(limits.period, now),
            str(int(lease_s * 1000)),
            str(ttl),
        ]
    )


def reserve_result(
    reply: list[object],
    key_id: str,
    rid: str,
    limits: Limits,
    est: Estimate,
    now: datetime,
    lease_s: float,
) -> Reservation:
    """The reservation, or raise the :class:`~keyguard.errors.RateLimited` the script chose."""
    if int(str(reply[0])) == 1:
        sec = int(str(reply[1]))
        period = period_id(limits.period, now)
        lease = now.timestamp() + lease_s
        return Reservation(rid, key_id, sec, est.tokens, est.cost_nano, period, lease)
    reason = _text(reply[1])
    if reason == "budget":
        spent = int(_text(reply[3]))
        raise deny(reason, key_id, limits, budget_retry_after(limits, now, spent, est.cost_nano))
    raise deny(reason, key_id, limits, int(str(reply[2])) / 1000)


def settle_args(
    names: KeyNames, res: Reservation, tokens: int, cost: int, now: datetime
) -> list[str]:
    return pack(
        [
            names.budget_prefix,
            res.rid,
            _tokens(tokens),
            _cost(cost),
            str(int(now.timestamp() * 1000)),
        ]
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def usage_from(
    key_id: str,
    limits: Limits,
    now: datetime,
    window: dict[object, object],
    in_flight: int,
    budget: list[object],
) -> Usage:
    """A :class:`Usage` from the raw replies of HGETALL window, ZCOUNT, HMGET budget."""
    now_s = int(now.timestamp())
    reqs = toks = 0
    for f, v in window.items():
        field = _text(f)
        if not now_s - WINDOW_S < int(field[1:]) <= now_s + WINDOW_S:
            continue
        if field[0] == "r":
            reqs += int(_text(v))
        else:
            toks += int(_text(v))
    spent = int(_text(budget[0])) if budget and budget[0] is not None else 0
    held = int(_text(budget[1])) if len(budget) > 1 and budget[1] is not None else 0
    start, end = period_bounds(limits.period, now)
    return Usage(
        key_id=key_id,
        requests_last_minute=reqs,
        tokens_last_minute=toks,
        in_flight=in_flight,
        period=period_id(limits.period, now),
        spent_usd=nano_to_usd(spent),
        held_usd=nano_to_usd(max(held, 0)),
        budget_usd=nano_to_usd(limits.budget_nano) if limits.budget_nano is not None else None,
        period_start=start,
        period_end=end,
    )
