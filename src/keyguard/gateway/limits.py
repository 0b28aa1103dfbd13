"""The limits step of the pipeline: reserve before forwarding, settle when the response ends.

:class:`Admission` estimates a request (tokens, cost) from its JSON body, reserves it with the
limiter (429 with ``Retry-After`` on denial), asks the upstream for the streaming usage chunk
when needed, and settles to the real ``usage`` the :class:`~keyguard.gateway.usage.UsageTap`
saw — or to the estimate when the response carried none, or releases the reservation when the
upstream never accepted the request.

When the shared limiter (Redis) is unreachable a request of a key with limits fails closed with
503, unless a ``fallback`` (per-replica in-process limiter) is configured. A key without any
limit has nothing to enforce: it is only counted (one background call after the response) and
keeps working while Redis is away (its usage is then not counted). After a failure Redis is retried
with exponential backoff (requests in between fail fast or use the fallback), so service comes
back by itself when Redis does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from keyguard.domain.limits import Limits, Reservation, Usage, period_id
from keyguard.domain.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    Estimate,
    PriceTable,
    TokenUsage,
    estimate_request,
)
from keyguard.domain.records import VirtualKey
from keyguard.errors import UpstreamTimeout
from keyguard.gateway.errors import ClientError
from keyguard.gateway.forward import PreparedBody
from keyguard.gateway.usage import UsageTap, request_usage_upstream
from keyguard.limits.memory import AsyncMemoryLimiter
from keyguard.limits.ports import AsyncLimiter, LimiterUnavailable

log = logging.getLogger("keyguard.gateway.limits")

GENERATING_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
_NOTHING = Estimate()
#: why forwarding may stop after the upstream got the request but before it answered
_ABANDONED = (asyncio.CancelledError, UpstreamTimeout)
UNAVAILABLE = (
    "rate limits cannot be checked: the limits store (Redis) is unreachable; "
    "the gateway refuses requests until it is back"
)


@dataclass
class Ticket:
    """One admitted request: its reservation, the limiter that holds it, and the tap."""

    reservation: Reservation
    limiter: AsyncLimiter
    model: str | None
    limits: Limits
    tap: UsageTap = field(default_factory=UsageTap)
    known_estimate: Estimate | None = None
    #: computes the estimate when it is first needed (a key without limits reserves nothing:
    #: its estimate matters only if the response reports no usage)
    estimator: Callable[[], Estimate] | None = None

    @property
    def estimate(self) -> Estimate:
        if self.known_estimate is None:
            assert self.estimator is not None
            self.known_estimate = self.estimator()
        return self.known_estimate


class Admission:
    """Reserve / settle around each forwarded request (see the module docstring)."""

    def __init__(
        self,
        limiter: AsyncLimiter,
        prices: PriceTable,
        *,
        fallback: AsyncLimiter | None = None,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        backoff: tuple[float, float] = (0.1, 2.0),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.fallback = fallback
        self.prices = prices
        self._default_out = default_output_tokens
        self._backoff = backoff
        self._delay = backoff[0]
        self._down_until = 0.0
        self._monotonic = monotonic
        self._tasks: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()  # settles waiting for Redis to be back
        self._limits_cache: dict[int, tuple[VirtualKey, Limits, bool]] = {}
        self.degraded = False

    def __repr__(self) -> str:
        return f"Admission({self.limiter!r}, fallback={self.fallback!r})"

    # -- admission ------------------------------------------------------------------------

    async def admit(
        self,
        key: VirtualKey,
        path: str,
        body: PreparedBody,
        now: datetime,
        content_length: int | None = None,
        *,
        enforce: bool = True,
    ) -> Ticket:
        """Reserve for this request (may rewrite ``body.data``); raises RateLimited or 503.
        ``enforce=False``: another component admitted it; only count its usage."""
        doc = body.doc if body.doc is not None else _json(body.data)  # parsed once
        strip = False
        if doc is not None and request_usage_upstream(path, doc):
            body.data = json.dumps(doc, separators=(",", ":")).encode()  # ASCII: lone surrogates
            strip = True
        size = len(body.data) if body.data is not None else (content_length or 0)
        estimator = partial(
            estimate_request,
            doc,
            body.model,
            self.prices,
            default_output_tokens=self._default_out,
            body_size=size,
            generates=path in GENERATING_PATHS,
        )
        limits, active = self._limits_of(key)
        tap = UsageTap(strip_usage_chunk=strip)
        if not active or not enforce:
            # nothing to enforce: the request is only counted, after the response. While the
            # limits store is known to be down it still fails closed (or degrades) like every
            # other key, so an outage never silently stops usage accounting.
            limiter = await self._probe(key, limits, now) if self.degraded else self.limiter
            sec = int(now.timestamp())
            period = period_id(limits.period, now)
            res = Reservation("", key.key_id, sec, 0, 0, period, 0.0, counted=False)
            return Ticket(res, limiter, body.model, limits, tap, estimator=estimator)
        # only a token or budget limit reserves the estimate; for request-rate and concurrency
        # limits it matters only when the response reports no usage (computed then)
        est = estimator() if limits.tpm is not None or limits.budget_nano is not None else None
        take = est if est is not None else _NOTHING
        limiter = self._pick()
        if isinstance(limiter, AsyncMemoryLimiter):  # in-process: no I/O, no coroutine
            res = limiter.limiter.reserve(key.key_id, limits, take, now)
            self._ok(limiter)
            return Ticket(res, limiter, body.model, limits, tap, est, estimator)
        try:
            res = await limiter.reserve(key.key_id, limits, take, now)
        except LimiterUnavailable:
            self._failed()
            limiter = self._pick()  # the fallback, or raise 503
            res = await limiter.reserve(key.key_id, limits, take, now)
        else:
            self._ok(limiter)
        return Ticket(res, limiter, body.model, limits, tap, est, estimator)

    def _limits_of(self, key: VirtualKey) -> tuple[Limits, bool]:
        """``Limits.of(key)`` and whether any is set, remembered per key record (the
        authenticator hands out the same record until the key changes)."""
        hit = self._limits_cache.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1], hit[2]
        limits = Limits.of(key)
        if len(self._limits_cache) >= 4096:
            self._limits_cache.clear()
        self._limits_cache[id(key)] = (key, limits, limits.active)
        return limits, limits.active

    def finish(self, ticket: Ticket, now: datetime, *, stopped: BaseException | None) -> None:
        """Settle: at once with the in-process limiter (a few dict updates, no I/O), else in
        the background (the response is already on its way to the client).

        ``stopped`` is why forwarding did not complete (``None`` when it did): when the client
        hung up or the upstream did not answer in time, the upstream had (or may have had) the
        request and bills it — the estimate is charged unless usage was seen."""
        completed = stopped is None
        abandoned = isinstance(stopped, _ABANDONED)
        limiter = ticket.limiter
        if isinstance(limiter, AsyncMemoryLimiter):
            tokens, cost = self._figures(ticket, completed, abandoned)
            res, sync = ticket.reservation, limiter.limiter
            if not res.counted:
                sync.record(res.key_id, ticket.limits, tokens, cost, now)
            elif tokens or cost:
                sync.settle(res, tokens, cost, now)
            else:
                sync.release(res, now)
            return
        task = asyncio.get_running_loop().create_task(
            self._finish(ticket, now, completed, abandoned)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, ticket: Ticket, now: datetime, completed: bool, abandoned: bool = False
    ) -> None:
        res = ticket.reservation
        tokens, cost = self._figures(ticket, completed, abandoned)
        try:
            if not res.counted:
                await ticket.limiter.record(res.key_id, ticket.limits, tokens, cost, now)
            elif tokens or cost:
                await ticket.limiter.settle(res, tokens, cost, now)
            else:
                await ticket.limiter.release(res, now)
        except LimiterUnavailable:
            # Redis is down: later requests of limited keys fail fast (logged once), and this
            # reservation is settled once it is back — not left holding a concurrency slot and
            # its estimate until its lease runs out
            if ticket.limiter is self.limiter:
                self._failed()
                if res.counted:
                    retry = self._settle_later(ticket.limiter, res, tokens, cost, now)
                    task = asyncio.get_running_loop().create_task(retry)
                    self._retries.add(task)
                    task.add_done_callback(self._retries.discard)

    async def _settle_later(
        self, limiter: AsyncLimiter, res: Reservation, tokens: int, cost: int, now: datetime
    ) -> None:
        """Retry a failed settle with back-off until it lands or the lease has run out (the
        store then charged the estimate; settling is idempotent either way)."""
        delay = self._backoff[0]
        while time.time() < res.lease_until:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
            try:
                if tokens or cost:
                    await limiter.settle(res, tokens, cost, now)
                else:
                    await limiter.release(res, now)
            except LimiterUnavailable:
                continue
            return

    def _figures(self, ticket: Ticket, completed: bool, abandoned: bool = False) -> tuple[int, int]:
        """Tokens and cost to settle ``ticket`` at."""
        tap = ticket.tap
        return settle_figures(
            self.prices,
            ticket.model,
            tap.usage,
            tap.status,
            completed=completed,
            abandoned=abandoned,
            estimate=lambda: ticket.estimate,
        )

    async def usage(self, key: VirtualKey, now: datetime) -> Usage:
        """A key's live counters (for an admin API); raises LimiterUnavailable."""
        return await self.limiter.usage(key.key_id, Limits.of(key), now)

    # -- Redis health ---------------------------------------------------------------------

    def _down(self) -> bool:
        return bool(self._down_until) and self._monotonic() < self._down_until

    def _pick(self) -> AsyncLimiter:
        if self._down():
            if self.fallback is not None:
                return self.fallback
            raise ClientError(503, UNAVAILABLE, "limits_unavailable")
        return self.limiter

    async def _probe(self, key: VirtualKey, limits: Limits, now: datetime) -> AsyncLimiter:
        """While the store is known to be down, a key without limits fails closed too (or
        degrades): inside the back-off window at once, after it by one cheap read."""
        limiter = self._pick()
        if limiter is self.limiter:
            try:
                await limiter.usage(key.key_id, limits, now)
            except LimiterUnavailable:
                self._failed()
                return self._pick()
            self._ok(limiter)
        return limiter

    def _failed(self) -> None:
        if not self._down_until:
            how = "per-replica limits" if self.fallback is not None else "failing closed"
            log.warning("limits store unreachable: %s until it is back", how)
        self.degraded = True
        self._down_until = self._monotonic() + self._delay
        self._delay = min(self._delay * 2, self._backoff[1])

    def _ok(self, limiter: AsyncLimiter) -> None:
        if limiter is self.limiter and self._down_until:
            log.warning("limits store reachable again")
            self._down_until = 0.0
            self._delay = self._backoff[0]
            self.degraded = False

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._retries):  # Redis is still away: the leases will expire there
            task.cancel()
        if self._retries:
            await asyncio.gather(*self._retries, return_exceptions=True)
        await self.limiter.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()


def settle_figures(
    prices: PriceTable,
    model: str | None,
    usage: TokenUsage | None,
    status: int,
    *,
    completed: bool,
    abandoned: bool,
    estimate: Callable[[], Estimate],
) -> tuple[int, int]:
    """``(tokens, nano-USD)`` to charge a request with: its reported ``usage``; else the
    estimate when the upstream answered (< 400) without usage, or had the request when the
    client hung up or it timed out (``abandoned``, no status yet); else nothing (refused or
    never reached). Shared by the core and the edge's records (docs/edge.md)."""
    if usage is not None:
        cost = prices.cost_nano(model, usage.input_tokens, usage.output_tokens, usage.cached_tokens)
        return usage.total, cost
    if (status and status < 400 and (completed or status < 300)) or (not status and abandoned):
        est = estimate()
        return est.tokens, est.cost_nano
    return 0, 0


def _json(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
