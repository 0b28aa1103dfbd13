"""Audit records of gateway requests, written in batches by a background thread.

The request path only appends a record to an in-memory list (a few hundred nanoseconds). A
writer thread flushes the list to the sink every ``interval`` seconds (default 50 ms), or at once
when ``batch_size`` records (default 256) are waiting, in one ``append_many`` call (one store
transaction). On orderly shutdown (:meth:`AuditBatcher.close`) everything pending is written,
a failing write retried until the close deadline; records still unwritten then are counted in an
error log, never dropped silently.

Crash window: a record is appended when its response has been sent. If the process dies
abruptly (SIGKILL, power loss), records appended since the last completed flush are lost: at
most ``interval`` plus the duration of one flush (≈ 50-60 ms of traffic, and never more than
``batch_size`` records plus those that arrive during the flush). If the sink fails, the batch is
kept and retried (bounded by ``max_pending``; beyond it the oldest records are dropped and the
drop is logged with a count).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

log = logging.getLogger("keyguard.gateway.audit")

T = TypeVar("T")

#: how long close() waits, past its deadline, for the write then in flight (store timeouts: 5 s)
_LAST_WRITE = 10.0


class RequestRecord(NamedTuple):  # a tuple: cheapest to build on the request path
    """What the gateway knows about one request; never a body, header value or secret."""

    time: datetime
    key_id: str | None
    client_ip: str
    method: str
    path: str
    model: str | None
    status: int
    latency_ms: float
    upstream: str | None = None
    upstream_version: int | None = None
    outcome: str = "ok"


class AuditBatcher(Generic[T]):
    """Collects records and hands them to ``sink`` in batches from a background thread."""

    def __init__(
        self,
        sink: Callable[[Sequence[T]], object],
        *,
        interval: float = 0.05,
        batch_size: int = 256,
        max_pending: int = 100_000,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_close = on_close
        self._interval = interval
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._pending: list[T] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._deadline = 0.0
        self._flushed = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="keyguard-audit", daemon=True)
        self._thread.start()

    def append(self, record: T) -> None:
        """Queue one record (thread-safe, never blocks on I/O)."""
        with self._lock:
            self._pending.append(record)
            n = len(self._pending)
        if n >= self._batch_size:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._flush_once()
        # stopping: write what is left, retrying (a busy database, a restarting server) until
        # close()'s deadline; only then are records given up, and counted
        while self._flush_once() and time.monotonic() < self._deadline:
            time.sleep(self._interval)
        with self._lock:
            lost, self._pending = len(self._pending), []
        if lost:
            log.error("audit writer stopped: %d records could not be written", lost)
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception as exc:
                log.error("audit close hook failed: %s", type(exc).__name__)

    def _flush_once(self) -> bool:
        """Hand what is pending to the sink; ``True`` when records are left (the sink failed)."""
        with self._lock:
            batch, self._pending = self._pending, []
        failed = False
        if batch:
            try:
                self._sink(batch)
            except Exception as exc:  # keep the records, retry next round
                failed = True
                log.error(
                    "audit write failed (%s); %d records kept", type(exc).__name__, len(batch)
                )
                with self._lock:
                    self._pending = batch + self._pending
                    excess = len(self._pending) - self._max_pending
                    if excess > 0:
                        del self._pending[:excess]
                        log.error("audit backlog full: %d records dropped", excess)
        with self._lock:
            self._flushed.notify_all()
            return failed and bool(self._pending)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything appended so far has been handed to the sink."""
        with self._lock:
            if not self._pending:
                return
            self._wake.set()
            self._flushed.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and stop the writer thread. A failing write is retried for up
        to ``timeout`` seconds (then the records left are dropped, with an error logged); waits
        for the write in flight at the deadline too (bounded by the store's lock timeout)."""
        self._deadline = time.monotonic() + timeout
        self._stop = True
        self._wake.set()
        self._thread.join(timeout + _LAST_WRITE)
