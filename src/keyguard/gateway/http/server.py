"""HTTP/1.1 server at the asyncio ``Protocol`` level, parsed by httptools (llhttp).

One :class:`HttpServerProtocol` per client connection. Each request becomes a
:class:`~keyguard.gateway.http.messages.Request` handed, with a
:class:`~keyguard.gateway.http.messages.ResponseWriter`, to the application handler in its own
task. Requests on one connection are answered strictly in order: a pipelined request waits in a
queue (and reading pauses) until the response before it is complete.

Wire-level rejections (answered here, before the application sees anything, connection closed
afterwards): malformed requests, absolute-form or asterisk targets, upgrades/CONNECT, duplicate
``Content-Length`` or ``Host``, ``Content-Length`` together with ``Transfer-Encoding``, any
transfer coding other than ``chunked`` (400); headers larger than the limit (431); a declared
body larger than the limit (413); headers not complete within the header timeout (408).
Requests received completely before a bad one are still answered, in order; the rejection
follows them and the connection closes. Bad framing inside a body that is already streaming
(a malformed chunk) fails that body with :class:`MalformedBody`: the application answers 400
(or cuts a response already started) and the upstream never sees that body complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

from keyguard.gateway.http.framing import (
    REASONS,
    BodyTooLarge,
    MalformedBody,
    Reject,
    ServerLimits,
)
from keyguard.gateway.http.messages import BodyStream, ConnState, Request, ResponseWriter
from keyguard.gateway.http.tracker import ConnectionTracker

log = logging.getLogger("keyguard.gateway")

Handler = Callable[[Request, ResponseWriter], Awaitable[None]]
#: renders a wire-level rejection: (status, message, code) -> (content type, body)
ErrorRenderer = Callable[[int, str, str], bytes]


class HttpServerProtocol(asyncio.Protocol):
    """One client connection: parse requests, run the handler, keep order, enforce limits."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        render_error: ErrorRenderer,
        connections: ConnectionTracker | None = None,
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._render_error = render_error
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] = ("", 0)
        self.tls = False
        self.peer_cert: dict[str, Any] | None = None
        # parse state of the request being received
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._content_length: int | None = None
        self._chunked = False
        self._has_host = False
        self._in_head = False  # between the request line and the end of the headers
        self._body: BodyStream | None = None
        self._body_received = 0
        # in-flight work
        self._active: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[tuple[Request, ResponseWriter]] = deque()
        self._deadline = 0.0  # loop time; 0 = none (checked by the tracker's sweep)
        self._on_deadline: Callable[[], None] | None = None
        self._pause_reasons: set[str] = set()
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._idle = False
        self._state = ConnState()
        #: a rejection to send once the requests received before it have been answered
        self._final_error: tuple[int, str, str] | None = None

    # ---- connection lifecycle ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            self.tls = True
            self.peer_cert = ssl_obj.getpeercert()
        if self._connections is not None:
            self._connections.add(self)
        self._set_timer(self._limits.header_timeout, self._on_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        if self._connections is not None:
            self._connections.discard(self)
        if self._body is not None:
            self._body.fail(ConnectionResetError("client disconnected"))
        if self._task is not None and not self._task.done():
            self._task.cancel()  # client went away: the handler cancels the upstream request
        for req, _ in self._pending:
            req.body.fail(ConnectionResetError("client disconnected"))
        self._pending.clear()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("client disconnected"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._closing:
            raise ConnectionResetError("client disconnected")
        if not self._write_paused:
            return
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()
        await self._drain_waiter

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except Reject as exc:
            self._reject(exc.status, exc.message, exc.code)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades and CONNECT are not supported", "bad_request")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Reject):
                self._reject(cause.status, cause.message, cause.code)
            else:
                log.error("internal error while parsing a request: %s", type(cause).__name__)
                self._reject(400, "malformed HTTP request", "bad_request")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request", "bad_request")

    # ---- pause/resume reading for several independent reasons ----------------------------
    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self._closing:
            self.transport.resume_reading()

    # ---- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._content_length = None
        self._chunked = False
        self._has_host = False
        self._body_received = 0
        if self._idle:
            # a new request on an idle keep-alive connection: its headers must arrive in time
            self._idle = False
            self._set_timer(self._limits.header_timeout, self._on_header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_header_bytes:
            raise Reject(431, "request line or headers too large", "request_header_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if not self._in_head:
            # a trailer field (after a chunked body): counted against the limit, then dropped —
            # it must never turn into a header of the request that was already checked
            if self._header_bytes > self._limits.max_header_bytes:
                raise Reject(431, "request trailers too large", "request_header_too_large")
            return
        if (
            self._header_bytes > self._limits.max_header_bytes
            or len(self._headers) >= self._limits.max_headers
        ):
            raise Reject(431, "request headers too large", "request_header_too_large")
        lname = name.lower()
        if lname == b"content-length":
            if self._content_length is not None:
                raise Reject(400, "duplicate Content-Length header", "bad_request")
            if not value.isdigit() or len(value) > 18:
                raise Reject(400, "invalid Content-Length header", "bad_request")
            self._content_length = int(value)
        elif lname == b"transfer-encoding":
            if self._chunked or value.strip().lower() != b"chunked":
                raise Reject(400, "unsupported Transfer-Encoding", "bad_request")
            self._chunked = True
        elif lname == b"host":
            if self._has_host:
                raise Reject(400, "duplicate Host header", "bad_request")
            self._has_host = True
        self._headers.append((lname, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._content_length is not None and self._chunked:
            raise Reject(400, "Content-Length together with Transfer-Encoding", "bad_request")
        if not self._url.startswith(b"/"):
            raise Reject(400, "only origin-form request targets are accepted", "bad_request")
        if self._parser.should_upgrade():
            raise Reject(400, "protocol upgrades are not supported", "bad_request")
        version = self._parser.get_http_version()
        if version == "1.1" and not self._has_host:
            raise Reject(400, "missing Host header", "bad_request")
        if self._content_length is not None and self._content_length > self._limits.max_body_bytes:
            raise Reject(413, "request body too large", "request_too_large")
        if self._active is None and not self._pending:
            self._cancel_timer()
        body = BodyStream(self, self._limits.body_buffer_high, self._limits.body_timeout)
        if not self._chunked and not self._content_length:
            body.finish()
        self._body = body
        req = Request(
            method=self._parser.get_method().decode("ascii"),
            target=self._url,
            headers=self._headers,
            http_version=version,
            keep_alive=self._parser.should_keep_alive(),
            peer=self.peer,
            body=body,
            content_length=self._content_length,
            chunked=self._chunked,
            tls=self.tls,
            conn_state=self._state,
        )
        writer = ResponseWriter(self, req)
        if self._active is None:
            self._start(req, writer)
        else:
            self._pending.append((req, writer))
            self.pause_reading("pipeline")

    def on_body(self, chunk: bytes) -> None:
        self._body_received += len(chunk)
        if self._body is None:
            return
        if self._body_received > self._limits.max_body_bytes:
            self._body.fail(BodyTooLarge("request body too large"))
            self._body = None
            self._closing_after_response()
            return
        self._body.feed(chunk)

    def on_message_complete(self) -> None:
        if self._body is not None:
            self._body.finish()
            self._body = None

    # ---- request cycles ------------------------------------------------------------------
    def _start(self, req: Request, writer: ResponseWriter) -> None:
        self._active = req
        self._task = self._loop.create_task(self._run(req, writer))

    async def _run(self, req: Request, writer: ResponseWriter) -> None:
        try:
            await self._handler(req, writer)
        except asyncio.CancelledError:
            writer.abandon()
            return
        except Exception as exc:  # the handler is supposed to answer every error itself
            log.error("unhandled %s in request handler", type(exc).__name__)
            if not writer.started:
                writer.send(500, [], self._render_error(500, "internal error", "internal_error"))
        if not writer.finished:
            writer.abandon()

    def cycle_done(self, writer: ResponseWriter, keep_alive: bool) -> None:
        """Called by the writer when its response is complete (or abandoned)."""
        self._active = None
        self._task = None
        if self.transport is None or self._closing:
            return
        if not keep_alive:
            self._close()
            return
        if self._pending:
            req, nxt = self._pending.popleft()
            if not self._pending:
                self.resume_reading("pipeline")
            self._start(req, nxt)
        elif self._final_error is not None:
            self._write_error_and_close(*self._final_error)
        else:
            self._idle = True
            self._set_timer(self._limits.keepalive_timeout, self._on_idle_timeout)

    def _closing_after_response(self) -> None:
        """Read no more; close once every request received so far has been answered."""
        self.pause_reading("closing")
        last = self._pending[-1][0] if self._pending else self._active
        if last is not None:
            last.keep_alive = False

    def _reject(self, status: int, message: str, code: str) -> None:
        body, self._body = self._body, None
        if body is not None and not body.complete:
            # the bad bytes are inside the body of the newest request (active or queued): its
            # handler answers it (400, or the response is cut if already started) and the
            # upstream never sees that body complete; then the connection closes
            body.fail(MalformedBody(message))
            self._closing_after_response()
            return
        if self._active is not None or self._pending:
            # requests before the bad one are answered in order, then the rejection, then close
            self._final_error = (status, message, code)
            self.pause_reading("closing")
            return
        self._write_error_and_close(status, message, code)

    def _write_error_and_close(self, status: int, message: str, code: str) -> None:
        if self.transport is None or self._closing:
            return
        body = self._render_error(status, message, code)
        reason = REASONS.get(status, b"Error")
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))
        )
        self.transport.write(head + body)
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    # ---- timers: a deadline per connection, checked by ConnectionTracker's sweep -------------
    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._deadline = self._loop.time() + delay
        self._on_deadline = callback

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        self._on_deadline = None

    def check_deadline(self, now: float) -> None:
        if self._deadline and now >= self._deadline and self._on_deadline is not None:
            callback = self._on_deadline
            self._cancel_timer()
            callback()

    def _on_header_timeout(self) -> None:
        if self._active is None and not self._pending:
            self._write_error_and_close(408, "request headers not received in time", "timeout")

    def _on_idle_timeout(self) -> None:
        if self._active is None and not self._pending:
            self._close()

    def shutdown(self) -> None:
        """Close the connection if idle; otherwise close after the current response."""
        if self._active is None and not self._pending:
            self._close()
        else:
            self._closing_after_response()
