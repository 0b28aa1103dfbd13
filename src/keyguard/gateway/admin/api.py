"""The admin API's request handling: address check, routing, authentication, scope, body,
dispatch off the event loop, error mapping, audit.

:class:`AdminApi` is handed to :class:`~keyguard.gateway.app.Gateway` (``admin=``), which
routes every ``/admin/...`` request here before its ``/v1`` proxy path and shares its client-IP
resolver and failed-authentication throttle through :meth:`AdminApi.attach`. Vault calls block
(SQLite, PostgreSQL), so they run on worker threads (``asyncio.to_thread``): an admin call never
stalls proxied traffic.

Every mutating call is audited (``admin.request``, with the operation and status) besides the
vault's own record of the change; so is every failed authentication (``admin.auth``) and every
scope refusal. Error bodies have OpenAI's shape and never echo a credential.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from keyguard.domain.admin_tokens import AdminToken, parse_admin_token
from keyguard.domain.audit import AuditEvent
from keyguard.errors import (
    AccessDenied,
    AlreadyExists,
    ConcurrentUpdate,
    ConfigError,
    DecryptionError,
    KeyFormatError,
    KeyguardError,
    KeyNotFound,
    StorageError,
    Unauthenticated,
    UpstreamError,
    VaultError,
    VaultLocked,
)
from keyguard.gateway.admin import handlers as h
from keyguard.gateway.admin.openapi import document_bytes
from keyguard.gateway.admin.routes import OPENAPI_PATH, Route, allowed_methods, match
from keyguard.gateway.admin.validate import InvalidBody, parse_body
from keyguard.gateway.clientip import (
    BadForwarding,
    ClientIpResolver,
    IPAddress,
    IPNetwork,
    parse_networks,
)
from keyguard.gateway.errors import error_body, for_exception
from keyguard.gateway.headers import bearer_token
from keyguard.gateway.http.framing import BodyTooLarge, MalformedBody
from keyguard.gateway.http.messages import Request, ResponseWriter
from keyguard.gateway.limits import Admission
from keyguard.gateway.paths import BadPath, check_path, check_query
from keyguard.gateway.throttle import FailedAuthThrottle
from keyguard.vault.vault import Vault

log = logging.getLogger("keyguard.gateway.admin")

Headers = list[tuple[bytes, bytes]]
_JSON: Headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class Fail(Exception):
    """An error response: status, message, code, optional param and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param
        self.headers = headers or []
        self.audited = False


#: handler exception -> (status, code); first match wins
_ERROR_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (KeyNotFound, 404, "not_found"),
    (AlreadyExists, 409, "conflict"),
    (ConcurrentUpdate, 409, "conflict"),
    (VaultLocked, 500, "internal_error"),
    (DecryptionError, 500, "internal_error"),
    (VaultError, 409, "conflict"),
    (StorageError, 503, "storage_unavailable"),
    (h.Unavailable, 503, "limits_unavailable"),
    (ConfigError, 400, "invalid_request"),
    (ValueError, 400, "invalid_request"),
)


def _fail_for(exc: BaseException) -> Fail:
    if isinstance(exc, InvalidBody):
        return Fail(400, str(exc), "invalid_body", param=exc.param)
    if isinstance(exc, (AccessDenied, UpstreamError)):
        status = for_exception(exc)[0]
        return Fail(status, str(exc), getattr(exc, "code", None) or "upstream_error")
    for cls, status, code in _ERROR_TABLE:
        if isinstance(exc, cls):
            message = "internal error" if status == 500 else str(exc)
            if status == 503 and isinstance(exc, StorageError):
                message = "the vault's store is unavailable; try again"
            return Fail(status, message, code)
    return Fail(500, "internal error", "internal_error")


def admin_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """The parsed ``admin_cidrs``; :class:`ConfigError` naming the setting when one is bad."""
    try:
        return parse_networks(cidrs)
    except ConfigError:  # its message names trusted_proxies
        raise ConfigError(f"admin_cidrs: invalid network in {list(cidrs)}") from None


class AdminApi:
    """The ``/admin/`` part of the gateway (see the module docstring)."""

    def __init__(
        self,
        vault: Vault,
        services: h.Services,
        *,
        allowed_cidrs: Sequence[str] = (),
        max_body: int = 64 * 1024,
    ) -> None:
        self._vault = vault
        self._services = services
        self._networks = admin_networks(allowed_cidrs)
        self._max_body = max_body
        self._resolver = ClientIpResolver(())
        self._throttle = FailedAuthThrottle()

    def attach(
        self, resolver: ClientIpResolver, throttle: FailedAuthThrottle, limits: Admission | None
    ) -> None:
        """Share the gateway's client-IP resolver, failed-auth throttle and limiter."""
        self._resolver, self._throttle = resolver, throttle
        if limits is not None:
            self._services.limits = limits

    async def handle(self, req: Request, w: ResponseWriter, path_b: bytes, query: bytes) -> int:
        """Answer one ``/admin/...`` request; returns the status sent."""
        try:
            status, payload, headers = await self._handle(req, path_b, query)
        except ConnectionError:
            w.abandon()  # the client went away
            return 499
        except Exception as exc:  # a bug must not leak details: log the type, answer 500
            if isinstance(exc, Fail):
                fail = exc
            else:
                log.error("admin API request failed: %s", type(exc).__name__)
                fail = Fail(500, "internal error", "internal_error")
            if w.started:
                w.abandon()
                return fail.status
            body = error_body(fail.status, str(fail), fail.code, param=fail.param)
            w.send(fail.status, _JSON + fail.headers, body)
            return fail.status
        w.send(status, headers, payload)
        return status

    async def _handle(
        self, req: Request, path_b: bytes, query: bytes
    ) -> tuple[int, bytes, Headers]:
        try:
            path = check_path(path_b)
            check_query(query)
            ip = self._resolver.resolve(req.peer[0], req.headers)
        except (BadPath, BadForwarding) as exc:
            raise Fail(400, str(exc), "bad_request") from None
        if self._networks and not any(ip in net for net in self._networks):
            raise Fail(403, "the admin API is not available from this address", "forbidden_ip")
        if path == OPENAPI_PATH and req.method in ("GET", "HEAD"):
            return 200, document_bytes(), [(b"content-type", b"application/json")]
        route, params, known = match(req.method, path)
        if route is None:
            if known:
                allow = ", ".join(allowed_methods(path)).encode()
                raise Fail(
                    405,
                    f"method {req.method} is not allowed here",
                    "method_not_allowed",
                    headers=[(b"allow", allow)],
                )
            raise Fail(404, "no such admin API route", "not_found")
        token = await self._authenticate(req, ip, path)
        call = h.Call(self._vault, self._services, f"admin-token:{token.token_id}", str(ip))
        call.params = params
        call.query = dict(parse_qsl(query.decode("ascii", "replace")))
        if not token.scope.allows(route.scope):
            await self._audit(route, call, 403, "denied")
            needs = f"{route.method} {route.path} needs '{route.scope.value}'"
            msg = f"this admin token has scope '{token.scope.value}': {needs}"
            raise Fail(403, msg, "insufficient_scope")
        try:
            if route.request is not None:
                call.body = parse_body(await self._json_body(req), route.request)
            status, payload = await self._dispatch(route, call)
        except InvalidBody as exc:
            if route.mutating:
                await self._audit(route, call, 400, "denied")
            raise _fail_for(exc) from None
        except Fail as exc:
            if route.mutating and not exc.audited:
                await self._audit(route, call, exc.status, "denied")
            raise
        return status, json.dumps(payload).encode(), list(_JSON)

    # -- authentication -------------------------------------------------------------------

    async def _authenticate(self, req: Request, ip: IPAddress, path: str) -> AdminToken:
        mono = time.monotonic()
        refused = self._throttle.refusal(ip, mono)
        if refused is not None:  # not audited: a brute-force flood must not flood the audit log
            _, headers, _ = for_exception(refused)
            raise Fail(429, str(refused), "auth_throttled", headers=headers)
        token = bearer_token(req.headers)
        try:
            if not token:
                raise Unauthenticated(
                    "missing admin token: send 'Authorization: Bearer kga_...'",
                    code="missing_admin_token",
                )
            if len(token) > 200:
                raise Unauthenticated("invalid admin token", code="invalid_admin_token")
            # expiry is checked at this request's time; last_used_at is written at most once a
            # minute per token (see keyguard.vault.admin_tokens), not on every call
            return await asyncio.to_thread(self._vault.authenticate_admin, token, record_use=True)
        except Unauthenticated as exc:
            self._throttle.failure(ip, mono)
            claimed = _claimed_id(token)
            event = AuditEvent(
                "admin.auth",
                f"admin-token:{claimed}" if claimed else "anonymous",
                f"{req.method} {path}"[:300],
                str(ip),
                outcome="denied",
                details={"reason": getattr(exc, "code", None) or "invalid_admin_token"},
            )
            await self._append(event)
            raise Fail(
                401,
                str(exc),
                getattr(exc, "code", None) or "invalid_admin_token",
                headers=[(b"www-authenticate", b'Bearer realm="keyguard-admin"')],
            ) from None
        except StorageError:
            raise Fail(
                503, "the vault's store is unavailable; try again", "storage_unavailable"
            ) from None

    # -- body and dispatch ----------------------------------------------------------------

    async def _json_body(self, req: Request) -> Any:
        if not req.has_body:
            return {}
        try:
            data = await req.body.read_all(self._max_body)
        except (ValueError, BodyTooLarge):
            raise Fail(413, "request body too large", "request_too_large") from None
        except MalformedBody:
            req.keep_alive = False
            raise Fail(400, "malformed request body", "bad_request") from None
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise Fail(400, "request body is not valid JSON", "invalid_json") from None

    async def _dispatch(self, route: Route, call: h.Call) -> h.Payload:
        if inspect.iscoroutinefunction(route.handler):
            try:
                result: h.Payload = await route.handler(call)
            except (KeyguardError, h.Unavailable, ValueError) as exc:
                raise _fail_for(exc) from None
            return result
        return await asyncio.to_thread(self._run, route, call)

    def _run(self, route: Route, call: h.Call) -> h.Payload:
        """Run a synchronous handler (on a worker thread); audit it when it changes things."""
        try:
            status, payload = route.handler(call)
        except Exception as exc:
            fail = _fail_for(exc)
            if fail.status == 500:
                log.warning("admin API %s failed: %s", route.operation_id, type(exc).__name__)
            if route.mutating:
                outcome = "error" if fail.status >= 500 else "denied"
                self._audit_sync(route, call, fail.status, outcome)
                fail.audited = True
            raise fail from None
        if route.mutating:
            self._audit_sync(route, call, status, "ok")
        return status, payload

    # -- audit ----------------------------------------------------------------------------

    def _audit_sync(self, route: Route, call: h.Call, status: int, outcome: str) -> None:
        event = AuditEvent(
            "admin.request",
            call.actor,
            f"{route.method} {route.path}",
            call.source,
            outcome=outcome,
            details={"operation": route.operation_id, "status": status, **call.params},
        )
        self._append_sync(event)

    async def _audit(self, route: Route, call: h.Call, status: int, outcome: str) -> None:
        await asyncio.to_thread(self._audit_sync, route, call, status, outcome)

    async def _append(self, event: AuditEvent) -> None:
        await asyncio.to_thread(self._append_sync, event)

    def _append_sync(self, event: AuditEvent) -> None:
        try:
            self._vault.audit.append(event)
        except Exception as exc:  # an audit outage must not turn a refusal into a 500
            log.warning("could not audit admin API event: %s", type(exc).__name__)


def _claimed_id(token: str | None) -> str | None:
    """The public id of a well-formed admin token (for the audit record), else ``None``."""
    if not token:
        return None
    try:
        return parse_admin_token(token).token_id
    except KeyFormatError:
        return None
