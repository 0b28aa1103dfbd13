"""Forward one request to the pinned upstream and stream the response back unbuffered.

The request body is sent as it was prepared (read whole for the model check, a buffered
multipart prefix followed by the rest, or streamed from the first byte) by a pump task, while
this task waits for the response head. Response chunks are written to the client as they arrive
(SSE unbuffered) with back-pressure both ways. A stale pooled connection is retried once when
the request can be replayed. Client disconnect cancels this task, which aborts the upstream
connection; an upstream stall raises :class:`~keyguard.errors.UpstreamTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keyguard.errors import UpstreamError, UpstreamUnavailable
from keyguard.gateway.bodysniff import AmbiguousModel, MultipartScanner
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.credentials import UpstreamRoute
from keyguard.gateway.headers import request_head, response_headers
from keyguard.gateway.http.client import ConnectionPool, UpstreamConnection
from keyguard.gateway.http.messages import Request, ResponseWriter
from keyguard.gateway.paths import upstream_target
from keyguard.gateway.upstream_errors import MAX_ERROR_BODY, scrub_error_body
from keyguard.gateway.usage import UsageTap


@dataclass
class PreparedBody:
    """What the pipeline already read of the body: all of it (``data``) or a ``prefix``."""

    data: bytes | None = None
    prefix: list[bytes] = field(default_factory=list)
    model: str | None = None
    scanner: MultipartScanner | None = None
    #: raises when a ``model`` found while streaming (after a file part) is not allowed
    check_model: Callable[[str], None] | None = None
    #: ``data`` parsed, when the pipeline already parsed it and it is a JSON object
    doc: dict[str, Any] | None = None


class _Fallback(Exception):
    """The upstream refused the key with 401; another route is to be tried."""

    def __init__(self, route: UpstreamRoute) -> None:
        super().__init__(route.name)
        self.route = route


class BodyAborted(Exception):
    """The client's request body could not be forwarded (client gone, too large, ambiguous)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class Forwarder:
    """Sends requests upstream over pooled connections; one instance per event loop."""

    def __init__(self, config: GatewayConfig) -> None:
        self._timeout = config.upstream_timeout
        self._pool = ConnectionPool(
            connect_timeout=config.upstream_connect_timeout, idle_ttl=config.upstream_idle_ttl
        )

    def close(self) -> None:
        self._pool.close()

    async def forward(
        self,
        req: Request,
        w: ResponseWriter,
        route: UpstreamRoute,
        path: str,
        query: bytes,
        body: PreparedBody,
        tap: UsageTap | None = None,
        *,
        on_401: Callable[[], UpstreamRoute | None] | None = None,
    ) -> int:
        """Forward the request. When the upstream answers 401 and ``on_401`` gives another
        route (the PREVIOUS key during a rotation), the request is replayed there once, if
        its body can be replayed; nothing has reached the client by then."""
        target = upstream_target(route.base_path, path, query)
        streaming = body.data is None and req.has_body
        if body.data is not None:
            framing = b"content-length: %d\r\n" % len(body.data)
        elif streaming and req.content_length is not None:
            framing = b"content-length: %d\r\n" % req.content_length
        elif streaming:
            framing = b"transfer-encoding: chunked\r\n"
        elif req.method in ("POST", "PUT", "PATCH"):
            framing = b"content-length: 0\r\n"
        else:
            framing = b""
        head = request_head(
            req.method, target, route.host_header, req.headers, route.auth_lines, framing
        )
        first = head + body.data if body.data else head
        fallback = on_401 if not streaming else None
        for attempt in (0, 1):
            conn = await self._pool.acquire(route.origin)
            try:
                conn.begin(first, head_only=req.method == "HEAD")
                return await self._exchange(
                    req, w, route, conn, body, streaming, tap, fallback=fallback
                )
            except _Fallback as fb:
                conn.close()
                return await self.forward(req, w, fb.route, path, query, body, tap)
            except UpstreamUnavailable:
                retry = attempt == 0 and conn.reused and not conn.received_anything
                conn.close()
                if retry and not streaming and not w.started:
                    continue  # the idle connection had been closed by the upstream
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        req: Request,
        w: ResponseWriter,
        route: UpstreamRoute,
        conn: UpstreamConnection,
        body: PreparedBody,
        streaming: bool,
        tap: UsageTap | None = None,
        fallback: Callable[[], UpstreamRoute | None] | None = None,
    ) -> int:
        pump: asyncio.Task[None] | None = None
        if streaming:
            pump = asyncio.get_running_loop().create_task(
                _pump(req, conn, body, req.content_length is None)
            )
        try:
            try:
                status = await conn.read_head(self._timeout)
            except UpstreamError:
                if pump is not None and pump.done() and isinstance(pump.exception(), BodyAborted):
                    exc = pump.exception()
                    assert isinstance(exc, BodyAborted)
                    raise exc.cause from None
                raise
            if status == 401 and fallback is not None and (alt := fallback()) is not None:
                raise _Fallback(alt)  # nothing was sent to the client yet: replay there
            if status >= 400:  # read whole and cleaned: it may quote the key it was sent
                headers, data = scrub_error_body(status, conn.headers, await self._error(conn))
                if tap is not None:
                    tap.start(status, headers, len(data))
                w.start(status, response_headers(headers), len(data))
                w.write(data)
            else:
                await self._stream(w, conn, status, tap)
            if pump is not None and not pump.done():
                pump.cancel()  # the upstream answered before reading our whole body
                conn.close()
                req.keep_alive = False
            if tap is not None:
                w.write(tap.end())
            w.end()
            if conn.reusable and (pump is None or (pump.done() and not pump.cancelled())):
                self._pool.release(route.origin, conn)
            else:
                conn.close()
            return status
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            elif pump is not None and not pump.cancelled():
                pump.exception()  # retrieved: a late body failure is no "never retrieved" noise

    async def _stream(
        self, w: ResponseWriter, conn: UpstreamConnection, status: int, tap: UsageTap | None
    ) -> None:
        """Pass the response on chunk by chunk as it arrives (SSE unbuffered)."""
        cl = None
        for k, v in conn.headers:
            if k == b"content-length" and v.isdigit():
                cl = int(v)
        if tap is not None:  # limits: watch for usage (may strip the usage chunk)
            cl = tap.start(status, conn.headers, cl)
        w.start(status, response_headers(conn.headers), cl)
        chunk = conn.read_nowait()
        if chunk is None:
            w.flush()  # let the client see the head while the first chunk is on its way
            chunk = await conn.read(self._timeout)
        while chunk:
            w.write(tap.feed(chunk) if tap is not None else chunk)
            await w.drain()
            chunk = conn.read_nowait()
            if chunk is None:
                chunk = await conn.read(self._timeout)

    async def _error(self, conn: UpstreamConnection) -> bytes | None:
        """An error response's whole body, or ``None`` when it is over MAX_ERROR_BODY (the
        connection is then not reused: the rest is never read)."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = conn.read_nowait()
            if chunk is None:
                chunk = await conn.read(self._timeout)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > MAX_ERROR_BODY:
                return None
            parts.append(chunk)


async def _pump(
    req: Request,
    conn: UpstreamConnection,
    body: PreparedBody,
    chunked: bool,
) -> None:
    """Copy the client's body upstream (prefix first), checking multipart ``model`` fields.

    A ``model`` field that shows up only after a file part is checked when it arrives; if it is
    not allowed (or a second, different one appears) the upstream connection is cut before the
    body is complete, so the upstream never acts on the request.
    """
    scanner = body.scanner
    checked = len(scanner.models) if scanner is not None else 0
    try:
        for chunk in body.prefix:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        while chunk := await req.body.read():
            if scanner is not None:
                scanner.feed(chunk)
                if len(set(scanner.models)) > 1:
                    raise AmbiguousModel("the request body names 'model' more than once")
                if len(scanner.models) > checked:
                    checked = len(scanner.models)
                    if body.check_model is not None and checked == 1:
                        body.check_model(scanner.models[0])
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    except UpstreamError:
        return  # the upstream closed: the response side reports it
    except Exception as exc:
        conn.close()  # never let the upstream see a truncated body as complete
        raise BodyAborted(exc) from None
