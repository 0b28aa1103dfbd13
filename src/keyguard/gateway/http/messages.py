"""The request and response objects the wire-level server hands to the application.

:class:`Request` carries the parsed head and a :class:`BodyStream` (flow-controlled: reading
pauses when more than ``body_buffer_high`` bytes wait unread). :class:`ResponseWriter` frames the
response (``Content-Length`` or chunked), answers ``Expect: 100-continue`` when the application
first reads the body, and tells the connection when the response is complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyguard.gateway.http.server import HttpServerProtocol

_STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (int(s), s.phrase.encode("ascii")) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Status\r\n" % status


class BodyTimeout(Exception):
    """The client stopped sending its request body (no data within the body timeout)."""


def _expire_body(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(BodyTimeout("request body not received in time"))


class BodyStream:
    """Chunks of one request body as they arrive; ``read()`` returns ``b""`` at the end."""

    __slots__ = (
        "_chunks",
        "_done",
        "_error",
        "_high",
        "_proto",
        "_size",
        "_timeout",
        "_waiter",
        "on_first_read",
    )

    def __init__(
        self, proto: HttpServerProtocol | None, high: int = 256 * 1024, timeout: float = 60.0
    ) -> None:
        self._proto = proto
        self._timeout = timeout
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._high = high
        self.on_first_read: object | None = None

    @property
    def complete(self) -> bool:
        """True when the whole body has been received (not necessarily read)."""
        return self._done

    @property
    def exhausted(self) -> bool:
        """True when the whole body has been received and read."""
        return self._done and not self._chunks

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._high and self._proto is not None:
            self._proto.pause_reading("body")
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._done = True
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk, or ``b""`` when the body is complete; raises if the body failed."""
        cb = self.on_first_read
        if cb is not None:
            self.on_first_read = None
            if not self._done or self._chunks:
                cb()  # type: ignore[operator]
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(self._timeout, _expire_body, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._proto is not None and self._size <= self._high // 2:
            self._proto.resume_reading("body")
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """The whole body (at most ``limit`` bytes, else :class:`ValueError`)."""
        if self._done and self._error is None and self.on_first_read is None:
            data = b"".join(self._chunks)  # already here (the common small body): no waiting
            self._chunks.clear()
            self._size = 0
            if len(data) > limit:
                raise ValueError("body exceeds limit")
            if self._proto is not None:
                self._proto.resume_reading("body")
            return data
        parts = []
        total = 0
        while chunk := await self.read():
            total += len(chunk)
            if total > limit:
                raise ValueError("body exceeds limit")
            parts.append(chunk)
        return b"".join(parts)


class ConnState:
    """Per-connection scratch space for the application (e.g. the last authenticated key)."""

    __slots__ = ("auth",)

    def __init__(self) -> None:
        self.auth: Any = None


@dataclass(eq=False)
class Request:
    """The head of one request plus its body stream. Header names are lower-cased bytes."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: str
    keep_alive: bool
    peer: tuple[str, int]
    body: BodyStream
    content_length: int | None = None
    chunked: bool = False
    tls: bool = False
    conn_state: ConnState | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseWriter:
    """Writes one response: ``start()``, then ``write()``/``drain()``, then ``end()``."""

    __slots__ = (
        "_chunked",
        "_committed",
        "_expected",
        "_head",
        "_no_body",
        "_proto",
        "_req",
        "_sent",
        "finished",
        "started",
        "status",
    )

    def __init__(self, proto: HttpServerProtocol, req: Request) -> None:
        self._proto = proto
        self._req = req
        self.started = False
        self.finished = False
        self.status = 0
        self._chunked = False
        self._no_body = False
        self._head = b""
        self._expected: int | None = None
        self._sent = 0
        self._committed = False
        if req.has_body and (req.header(b"expect") or b"").lower() == b"100-continue":
            req.body.on_first_read = self._send_continue

    def _send_continue(self) -> None:
        t = self._proto.transport
        if not self.started and t is not None and not t.is_closing():
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def start(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None = None
    ) -> None:
        """Prepare the head; it is sent with the first body bytes or on ``flush()``."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        req = self._req
        parts = [status_line(status)]
        for k, v in headers:
            parts.append(k + b": " + v + b"\r\n")
        self._no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        if content_length is not None:
            if status not in (204, 304):
                parts.append(b"content-length: %d\r\n" % content_length)
            self._expected = 0 if self._no_body else content_length
        elif not self._no_body:
            if req.http_version == "1.1":
                self._chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                req.keep_alive = False  # body delimited by close
        if not req.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self._head = b"".join(parts)

    @property
    def committed(self) -> bool:
        """True once any byte of this response has been handed to the connection."""
        return self._committed

    def discard(self) -> None:
        """Forget a started response none of which has been sent yet, so that another (an
        error) can be sent in its place."""
        if self._committed or self.finished:
            raise RuntimeError("response already sent in part")
        self.started = False
        self.status = 0
        self._head = b""
        self._chunked = False
        self._no_body = False
        self._expected = None
        self._sent = 0

    def flush(self) -> None:
        """Send the head now (e.g. before waiting for a slow first body chunk)."""
        if self._head:
            self._write_raw(self._head)
            self._head = b""

    def write(self, data: bytes) -> None:
        if not data or self._no_body:
            return
        self._sent += len(data)
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._head:
            data = self._head + data
            self._head = b""
        self._write_raw(data)

    async def drain(self) -> None:
        await self._proto.drain()

    def end(self) -> None:
        """Complete the response; the connection moves on to the next request (or closes)."""
        if self.finished:
            return
        tail = b"0\r\n\r\n" if self._chunked else b""
        if self._head:
            tail = self._head + tail
            self._head = b""
        if tail:
            self._write_raw(tail)
        self.finished = True
        req = self._req
        keep = req.keep_alive and req.body.complete
        if self._expected is not None and self._sent != self._expected:
            keep = False
        self._proto.cycle_done(self, keep)

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete small response in one write."""
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def abandon(self) -> None:
        """Give up on this response (error or client gone): the connection is closed."""
        if not self.finished:
            self.finished = True
            self._proto.cycle_done(self, False)

    def _write_raw(self, data: bytes) -> None:
        self._committed = True
        t = self._proto.transport
        if t is not None and not t.is_closing():
            t.write(data)
