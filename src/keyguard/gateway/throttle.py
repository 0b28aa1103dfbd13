"""Failed-authentication throttling per source address (a token bucket each).

Every failed authentication takes one token from the bucket of the source address (IPv6: its
/64, since one host usually owns a whole /64). An empty bucket means 429 with ``Retry-After``
for every request from that source, before any key is looked at. Buckets refill at ``rate``
tokens per second up to ``burst``. Other sources are unaffected. With the defaults (burst 20,
one token per 5 s) a single address can test about 17,000 keys a day: against 256-bit secrets
that is nothing.
"""

from __future__ import annotations

import ipaddress

from keyguard.errors import RateLimited
from keyguard.gateway.clientip import IPAddress


class FailedAuthThrottle:
    """Token buckets of failed authentications, keyed by source address."""

    def __init__(self, burst: int = 20, rate: float = 0.2, max_sources: int = 100_000) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be >= 1 and rate > 0")
        self._burst = float(burst)
        self._rate = rate
        self._max = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _source(ip: IPAddress) -> str:
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
        return str(ip)

    def _tokens(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return self._burst
        tokens, last = entry
        return min(self._burst, tokens + (now - last) * self._rate)

    def retry_after(self, ip: IPAddress, now: float) -> float:
        """Seconds until ``ip`` may try again; 0 when it may now."""
        if not self._buckets:
            return 0.0
        tokens = self._tokens(self._source(ip), now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def refusal(self, ip: IPAddress, now: float) -> RateLimited | None:
        """The 429 for ``ip`` while its bucket is empty (proxy and admin API alike), else
        ``None``."""
        wait = self.retry_after(ip, now)
        if wait <= 0:
            return None
        return RateLimited(
            "too many failed authentication attempts from this address",
            retry_after=wait,
            code="auth_throttled",
        )

    def failure(self, ip: IPAddress, now: float) -> None:
        """Record one failed authentication from ``ip`` at ``now`` (monotonic seconds)."""
        source = self._source(ip)
        tokens = self._tokens(source, now)
        self._buckets[source] = (max(tokens - 1.0, -self._burst), now)
        if len(self._buckets) > self._max:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [s for s in self._buckets if self._tokens(s, now) >= self._burst]
        for s in full:
            del self._buckets[s]
        while len(self._buckets) > self._max:  # still too many: forget the oldest
            del self._buckets[next(iter(self._buckets))]
