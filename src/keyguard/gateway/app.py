"""The request pipeline: client IP → throttle → virtual key → policy → key swap → stream → audit.

:class:`Gateway` is the application the wire-level server (:mod:`keyguard.gateway.http`) calls
for every request. Everything it needs is passed in: an authenticator, an upstream provider, an
audit batcher, the policy function and a clock.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from keyguard.domain import policy as domain_policy
from keyguard.domain.keys import parse_virtual_key
from keyguard.domain.policy import check_key_state
from keyguard.domain.records import VirtualKey
from keyguard.errors import (
    AccessDenied,
    KeyFormatError,
    KeyguardError,
    Unauthenticated,
    UpstreamError,
)
from keyguard.gateway import errors
from keyguard.gateway.audit import AuditBatcher, RequestRecord
from keyguard.gateway.bodysniff import (
    AmbiguousModel,
    MultipartScanner,
    multipart_boundary,
    parse_json_model,
)
from keyguard.gateway.clientip import BadForwarding, ClientIpResolver, IPAddress
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.credentials import CredentialCache, UpstreamRoute
from keyguard.gateway.errors import ClientError
from keyguard.gateway.forward import Forwarder, PreparedBody
from keyguard.gateway.headers import bearer_token
from keyguard.gateway.http.framing import BodyTooLarge, MalformedBody
from keyguard.gateway.http.messages import BodyTimeout, Request, ResponseWriter
from keyguard.gateway.limits import Admission
from keyguard.gateway.paths import BadPath, check_path, check_query, split_target
from keyguard.gateway.ports import Authenticator, UpstreamProvider
from keyguard.gateway.throttle import FailedAuthThrottle

if TYPE_CHECKING:
    from keyguard.gateway.admin.api import AdminApi

log = logging.getLogger("keyguard.gateway")

PolicyCheck = Callable[..., None]
JSON_HEADERS = [(b"content-type", b"application/json")]
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
_BODYLESS = frozenset({"GET", "HEAD", "DELETE"})
#: set by the native edge on requests it hands to the core (trusted only on the core socket)
EDGE_PEER = b"keyguard-edge-peer"
EDGE_ADMITTED = b"keyguard-edge-admitted"


class _Ctx:
    __slots__ = ("audit", "client_ip", "key_id", "model", "status", "upstream", "version")

    def __init__(self) -> None:
        self.key_id: str | None = None
        self.client_ip = ""
        self.model: str | None = None
        self.status = 0
        self.upstream: str | None = None
        self.version: int | None = None
        self.audit = True


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _key_id(token: str) -> str | None:
    """The public key id of a well-formed virtual key (for the audit record), else ``None``."""
    try:
        return parse_virtual_key(token).key_id
    except KeyFormatError:
        return None


class Gateway:
    """The gateway application; ``await gateway.handle(request, writer)`` per request."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        authenticator: Authenticator,
        upstreams: UpstreamProvider,
        audit: AuditBatcher[RequestRecord] | None = None,
        check_request: PolicyCheck = domain_policy.check_request,
        clock: Callable[[], datetime] = _utcnow,
        ready: Callable[[], bool] | None = None,
        limits: Admission | None = None,
        admin: AdminApi | None = None,
    ) -> None:
        self.config = config
        self._auth = authenticator
        self._audit = audit
        self._check = check_request
        self._clock = clock
        self._ready = ready
        self._limits = limits
        self._resolver = ClientIpResolver(config.trusted_proxies)
        self._throttle = FailedAuthThrottle(config.throttle_burst, config.throttle_rate)
        self._routes = CredentialCache(upstreams, config)
        self._forwarder = Forwarder(config)
        self._admin = admin
        self._edge_core = config.core_socket is not None
        if admin is not None:  # /admin/ shares the client-IP resolver and failed-auth throttle
            admin.attach(self._resolver, self._throttle, limits)

    def close(self) -> None:
        self._forwarder.close()

    async def handle(self, req: Request, w: ResponseWriter) -> None:
        t0 = time.perf_counter()
        if self._edge_core and not self._from_edge(req, w):
            return
        path_b, query = split_target(req.target)
        if path_b in (b"/healthz", b"/readyz"):
            self._health(path_b, w)
            return
        if self._admin is not None and path_b.startswith(b"/admin/"):
            await self._admin.handle(req, w, path_b, query)
            return
        ctx = _Ctx()
        ctx.client_ip = req.peer[0]
        try:
            ctx.status = await self._proxy(req, w, ctx, path_b, query)
        except asyncio.CancelledError:
            ctx.status = 499  # client closed the connection
            self._record(req, ctx, path_b, t0)
            raise
        except (KeyguardError, ClientError, BadPath, BadForwarding, AmbiguousModel) as exc:
            ctx.status = self._send_error(w, exc)
        except BodyTooLarge:
            ctx.status = self._send_error(
                w, ClientError(413, "request body too large", "request_too_large")
            )
        except MalformedBody:
            req.keep_alive = False
            ctx.status = self._send_error(
                w, ClientError(400, "malformed request body", "bad_request")
            )
        except BodyTimeout:
            req.keep_alive = False
            ctx.status = self._send_error(
                w, ClientError(408, "request body not received in time", "timeout")
            )
        except ConnectionError:
            ctx.status = 499
            w.abandon()
        self._record(req, ctx, path_b, t0)

    def _from_edge(self, req: Request, w: ResponseWriter) -> bool:
        """On the core socket the client's address is the edge's ``keyguard-edge-peer``."""
        peer = req.header(EDGE_PEER)
        try:
            text = peer.decode("ascii") if peer is not None else ""
            ipaddress.ip_address(text)
        except ValueError:
            req.keep_alive = False
            self._send_error(
                w, ClientError(400, "request without the edge's peer address", "bad_request")
            )
            return False
        req.peer = (text, 0)
        return True

    def _health(self, path: bytes, w: ResponseWriter) -> None:
        if path == b"/healthz":
            w.send(200, JSON_HEADERS, b'{"status":"ok"}')
            return
        try:
            ok = self._ready() if self._ready is not None else True
        except Exception as exc:
            log.warning("readiness check failed: %s", type(exc).__name__)
            ok = False
        if ok:
            w.send(200, JSON_HEADERS, b'{"status":"ready"}')
        else:
            w.send(503, JSON_HEADERS, b'{"status":"not ready"}')

    async def _proxy(
        self, req: Request, w: ResponseWriter, ctx: _Ctx, path_b: bytes, query: bytes
    ) -> int:
        path = check_path(path_b)
        check_query(query)
        if not path.startswith("/v1/"):
            raise ClientError(404, "not found: keyguard forwards paths under /v1/", "not_found")
        if req.method not in METHODS:
            raise ClientError(405, f"method {req.method} is not allowed", "method_not_allowed")
        ip, ctx.client_ip = self._resolver.resolve_with_text(req.peer[0], req.headers)
        now = self._clock()
        key = self._authenticate(req, ip, ctx, now)
        ctx.upstream = key.upstream
        body = await self._read_for_model(req, key)
        ctx.model = body.model
        self._check(key, now=now, client_ip=ip, path=path, model=body.model)
        if body.scanner is not None:
            check = self._check

            def check_model(model: str) -> None:
                check(key, now=now, client_ip=ip, path=path, model=model)

            body.check_model = check_model
        route = self._routes.route(key.upstream)
        ctx.version = route.version

        def on_401() -> UpstreamRoute | None:  # CURRENT refused: PREVIOUS, during a rotation
            alt = self._routes.fallback(key.upstream, route.version)
            if alt is not None:
                ctx.version = alt.version
            return alt

        if self._limits is None:
            return await self._forwarder.forward(req, w, route, path, query, body, on_401=on_401)
        # a request the edge admitted (its rate/concurrency limits counted there) is only
        # counted here, for usage and spend
        enforce = not (self._edge_core and req.header(EDGE_ADMITTED) == b"1")
        ticket = await self._limits.admit(key, path, body, now, req.content_length, enforce=enforce)
        stopped: BaseException | None = None
        try:
            return await self._forwarder.forward(
                req, w, route, path, query, body, ticket.tap, on_401=on_401
            )
        except BaseException as exc:  # why forwarding stopped decides what is charged
            stopped = exc
            raise
        finally:
            self._limits.finish(ticket, self._clock(), stopped=stopped)

    def _authenticate(self, req: Request, ip: IPAddress, ctx: _Ctx, now: datetime) -> VirtualKey:
        mono = time.monotonic()
        refused = self._throttle.refusal(ip, mono)
        if refused is not None:
            ctx.audit = False  # a brute-force flood must not flood the audit log too
            raise refused
        token = bearer_token(req.headers)
        if not token:
            self._throttle.failure(ip, mono)
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer <keyguard virtual key>'"
            )
        if len(token) > 200:
            self._throttle.failure(ip, mono)
            raise Unauthenticated("malformed API key (not a keyguard virtual key)")
        state = req.conn_state
        cached = state.auth if state is not None else None
        key: VirtualKey
        try:
            reuse = None
            if cached is not None and cached[2] > mono and hmac.compare_digest(cached[0], token):
                reuse = cached[1]
                if reuse is not None and self._auth.current(reuse.key_id) is not reuse:
                    reuse = None  # revoked, rotated or edited since: verify again
            if reuse is not None:
                # same key again on this keep-alive connection and its record unchanged (any
                # write replaces the record): skip the HMAC; expiry is still checked now
                key = reuse
                check_key_state(key, now=now)
            else:
                key = self._auth.authenticate(token, now)
                if state is not None and self.config.auth_cache_ttl > 0:
                    state.auth = (token, key, mono + self.config.auth_cache_ttl)
        except Unauthenticated as exc:
            if exc.code not in ("revoked_api_key", "expired_api_key"):
                self._throttle.failure(ip, mono)
            ctx.key_id = _key_id(token)  # the claimed id, for the audit record
            raise
        ctx.key_id = key.key_id
        return key

    async def _read_for_model(self, req: Request, key: VirtualKey) -> PreparedBody:
        """Read as much of the body as the model check needs; the rest streams later."""
        if not req.has_body or req.method in _BODYLESS:
            return PreparedBody()
        restricted = not key.policy.models.allow_all
        ctype = req.header(b"content-type") or b""
        if not restricted:
            # the common case: a small JSON body is read only to learn the model for the
            # audit record; anything else streams untouched
            is_json = ctype.split(b";", 1)[0].strip().lower() == b"application/json"
            small = req.content_length is not None and (
                req.content_length <= self.config.audit_json_sniff_limit
            )
            if not (is_json and small):
                return PreparedBody()
            data = await self._read_whole(req)
            _, model, doc = parse_json_model(data)
            return PreparedBody(data=data, model=model, doc=doc)
        enc = (req.header(b"content-encoding") or b"identity").strip().lower()
        if enc != b"identity":
            raise ClientError(
                415, "encoded request bodies are not accepted for this key", "bad_encoding"
            )
        boundary = multipart_boundary(ctype)
        if boundary is not None:
            return await self._multipart_prefix(req, boundary)
        data = await self._read_whole(req)
        parsed, model, doc = parse_json_model(data)
        if not parsed:
            raise ClientError(400, "request body is not valid JSON", "invalid_json")
        return PreparedBody(data=data, model=model, doc=doc)

    async def _read_whole(self, req: Request) -> bytes:
        try:
            return await req.body.read_all(self.config.limits.max_body_bytes)
        except (ValueError, BodyTooLarge):
            raise ClientError(413, "request body too large", "request_too_large") from None

    async def _multipart_prefix(self, req: Request, boundary: bytes) -> PreparedBody:
        scanner = MultipartScanner(boundary)
        prefix: list[bytes] = []
        size = 0
        limit = self.config.max_multipart_prefix
        while not scanner.models and not scanner.file_started and not scanner.finished:
            try:
                chunk = await req.body.read()
            except BodyTooLarge:
                raise ClientError(413, "request body too large", "request_too_large") from None
            if not chunk:
                break
            scanner.feed(chunk)
            prefix.append(chunk)
            size += len(chunk)
            if size > limit:
                break
        if len(set(scanner.models)) > 1:  # the first read may hold several parts at once
            raise AmbiguousModel("the request body names 'model' more than once")
        model = scanner.models[0] if scanner.models else None
        return PreparedBody(prefix=prefix, model=model, scanner=scanner)

    def _send_error(self, w: ResponseWriter, exc: Exception) -> int:
        if isinstance(exc, KeyguardError):
            status, headers, body = errors.for_exception(exc)
            if isinstance(exc, UpstreamError):
                log.warning("upstream error: %s", type(exc).__name__)
        else:
            status = getattr(exc, "status", 400)
            code = getattr(exc, "code", "bad_request")
            headers, body = [], errors.error_body(status, str(exc), code)
        if w.started:
            if w.committed:
                w.abandon()  # too late for an error response: cut the connection
                return status
            w.discard()  # nothing of the response has left yet: send the error instead
        w.send(status, JSON_HEADERS + headers, body)
        return status

    def _record(self, req: Request, ctx: _Ctx, path: bytes, t0: float) -> None:
        if self._audit is None or not ctx.audit:
            return
        latency = (time.perf_counter() - t0) * 1000.0
        outcome = "ok" if ctx.status < 400 else "denied" if ctx.status < 500 else "error"
        self._audit.append(
            RequestRecord(
                time=self._clock(),
                key_id=ctx.key_id,
                client_ip=ctx.client_ip,
                method=req.method,
                path=path.decode("ascii", "replace")[:512],
                model=ctx.model[:200] if ctx.model else None,
                status=ctx.status,
                latency_ms=round(latency, 3),
                upstream=ctx.upstream,
                upstream_version=ctx.version,
                outcome=outcome,
            )
        )


__all__ = ["AccessDenied", "ClientError", "Gateway", "UpstreamRoute"]
