"""A small HTTP/1.1 client over asyncio for the upstream, with a keep-alive pool per origin.

This module is the one seam between socket/TLS/parser errors and keyguard's error tree: every
failure leaves it as :class:`~keyguard.errors.UpstreamUnavailable` (502) or
:class:`~keyguard.errors.UpstreamTimeout` (504), with a message that names no host, address,
certificate detail or credential. Redirects are never followed: the client has no notion of them,
a 3xx is just a response.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

from keyguard.errors import UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger("keyguard.gateway")

#: bytes an upstream may send before its response head is complete (OpenAI's are ~1-2 KiB);
#: beyond it the response is refused (502) rather than buffered
MAX_RESPONSE_HEAD = 64 * 1024


@dataclass(frozen=True)
class Origin:
    """Where a request goes: scheme, pinned host and port, and the TLS context to verify it."""

    scheme: str
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.scheme, self.host, self.port, id(self.ssl_context))


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream; one request at a time; reusable after a clean response."""

    def __init__(self, high_water: int = 512 * 1024) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._high = high_water
        self.lost = False
        self.reused = False
        self._in_flight = False  # a request has been sent and its response is not complete
        self._reset_state()
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def _reset_state(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._head_bytes = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._complete = False
        self._got_bytes = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head_only = False
        self._read_paused = False
        self._keep_alive = False
        self._until_close = False

    # ---- asyncio protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self._complete and self._head_done and self._until_close:
            self._complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self._complete:
            self._fail(UpstreamUnavailable("the upstream closed the connection"))
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_exception(UpstreamUnavailable("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:  # includes _Unsolicited, raised from a callback
            self._fail(UpstreamUnavailable("the upstream sent an invalid HTTP response"))
            self.close()
            return
        if not self._head_done and not self.lost:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_RESPONSE_HEAD:  # headers without end: never buffer them
                self._fail(UpstreamUnavailable("the upstream sent an invalid HTTP response"))
                self.close()

    def eof_received(self) -> bool | None:
        return None

    # ---- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if not self._in_flight:
            # bytes after a complete response (or before any request): never part of the next
            # answer — the connection is poisoned (parsing stops here, data_received closes it)
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field after a chunked body: dropped, never a response header
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # interim response (100 Continue, 103 Early Hints): ignore
            return
        self.status = status
        self._head_done = True
        if self._head_only:
            self._complete = True
        else:
            framed = any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
            self._until_close = not framed and status not in (204, 304)
        self._wake()

    def on_body(self, chunk: bytes) -> None:
        if not self._head_done:
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._high and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head_done:
            # read it now: llhttp resets the flag once this callback returns
            self._keep_alive = self._parser.should_keep_alive()
            self._complete = True
            self._in_flight = False
            self._wake()

    # ---- request side ----------------------------------------------------------------------
    def begin(self, head: bytes, *, head_only: bool = False) -> None:
        """Send a request head (and possibly the whole small body with it)."""
        self._reset_state()
        self._head_only = head_only
        self._in_flight = True
        self.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.lost or self.transport.is_closing():
            raise UpstreamUnavailable("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise UpstreamUnavailable("the upstream closed the connection")
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    # ---- response side ---------------------------------------------------------------------
    async def read_head(self, timeout: float) -> int:
        """Wait for the response head; returns the status (headers in ``self.headers``)."""
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        return self.status

    def read_nowait(self) -> bytes | None:
        """A buffered body chunk, ``b""`` at the end, or ``None`` if the caller must wait."""
        if self._chunks:
            return self._take()
        if self._complete:
            return b""
        if self._error is not None:
            raise self._error
        return None

    async def read(self, timeout: float) -> bytes:
        """The next body chunk, ``b""`` at the end; :class:`UpstreamTimeout` if it stalls."""
        while True:
            chunk = self.read_nowait()
            if chunk is not None:
                return chunk
            await self._wait(timeout)

    def _take(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._read_paused and self._size <= self._high // 2 and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return chunk

    async def _wait(self, timeout: float) -> None:
        fut = self._loop.create_future()
        self._waiter = fut
        handle = self._loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and not self._head_only
            and not self.lost
            and not self._chunks
            and self._keep_alive
        )

    @property
    def received_anything(self) -> bool:
        return self._got_bytes

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class _Unsolicited(Exception):
    """The upstream sent a response nobody asked for (after a complete one, or while idle)."""


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(UpstreamTimeout("the upstream did not answer in time"))


class ConnectionPool:
    """Idle keep-alive connections per origin; new ones verified with the origin's TLS context."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        idle_ttl: float = 30.0,
        max_idle_per_origin: int = 256,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._idle_ttl = idle_ttl
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int, int], deque[tuple[UpstreamConnection, float]]] = {}

    async def acquire(self, origin: Origin) -> UpstreamConnection:
        """An idle connection to ``origin`` if a fresh one is available, else a new one."""
        dq = self._idle.get(origin.key)
        if dq:
            now = time.monotonic()
            while dq:
                conn, since = dq.pop()
                if not conn.lost and now - since < self._idle_ttl:
                    conn.reused = True
                    return conn
                conn.close()
        return await self._connect(origin)

    def release(self, origin: Origin, conn: UpstreamConnection) -> None:
        """Return ``conn`` after a complete response, or close it if it cannot be reused."""
        if not conn.reusable:
            conn.close()
            return
        dq = self._idle.setdefault(origin.key, deque())
        if len(dq) >= self._max_idle:
            conn.close()
            return
        dq.append((conn, time.monotonic()))

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        ctx = origin.ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and ctx is None:
            raise UpstreamUnavailable("no TLS context for an https upstream")
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    UpstreamConnection,
                    origin.host,
                    origin.port,
                    ssl=ctx,
                    server_hostname=origin.host if ctx is not None else None,
                ),
                self._connect_timeout,
            )
        except ssl.SSLCertVerificationError:
            raise UpstreamUnavailable(
                "the upstream's TLS certificate could not be verified"
            ) from None
        except ssl.SSLError:
            raise UpstreamUnavailable("the TLS handshake with the upstream failed") from None
        except asyncio.TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError:
            raise UpstreamUnavailable("the upstream could not be reached") from None
        return proto

    def close(self) -> None:
        for dq in self._idle.values():
            for conn, _ in dq:
                conn.close()
        self._idle.clear()
