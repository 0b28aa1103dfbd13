"""The one table from keyguard errors to HTTP statuses, and OpenAI-shaped error bodies.

Every error body is ``{"error": {"message", "type", "code", "param"}}``. Messages pass through
value- and pattern-based redaction before they leave, so even a careless message cannot carry
a credential; upstream failures carry only keyguard's own generic wording.
"""

from __future__ import annotations

import json

from keyguard.domain.redaction import redact
from keyguard.errors import (
    AccessDenied,
    Forbidden,
    KeyguardError,
    RateLimited,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

#: error class -> (HTTP status, OpenAI error type); first match wins
STATUS_TABLE: tuple[tuple[type[KeyguardError], int, str], ...] = (
    (Unauthenticated, 401, "invalid_request_error"),
    (Forbidden, 403, "permission_error"),
    (RateLimited, 429, "rate_limit_error"),
    (AccessDenied, 403, "permission_error"),
    (UpstreamTimeout, 504, "server_error"),
    (UpstreamUnavailable, 502, "server_error"),
    (UpstreamError, 502, "server_error"),
)

JSON = b"application/json"


class ClientError(Exception):
    """A request refused before any policy applies (400, 404, 405, 413, 415)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_body(
    status: int,
    message: str,
    code: str | None,
    type_: str | None = None,
    *,
    param: str | None = None,
) -> bytes:
    """An OpenAI-shaped JSON error body (``param`` names the offending field, if any)."""
    if type_ is None:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
    payload = {"error": {"message": redact(message), "type": type_, "code": code, "param": param}}
    return json.dumps(payload).encode("utf-8")


def render_wire_error(status: int, message: str, code: str) -> bytes:
    """Renderer the wire-level server uses for its own rejections."""
    return error_body(status, message, code)


def for_exception(exc: KeyguardError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, extra headers, body)`` for a keyguard error, from :data:`STATUS_TABLE`."""
    status, type_ = 500, "server_error"
    for cls, cls_status, cls_type in STATUS_TABLE:
        if isinstance(exc, cls):
            status, type_ = cls_status, cls_type
            break
    code = getattr(exc, "code", None)
    if isinstance(exc, UpstreamTimeout):
        code = "upstream_timeout"
    elif isinstance(exc, UpstreamError):
        code = "upstream_unavailable"
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, RateLimited):
        headers.append((b"retry-after", b"%d" % max(1, int(exc.retry_after + 0.999))))
    message = str(exc) if isinstance(exc, (AccessDenied, UpstreamError)) else "internal error"
    return status, headers, error_body(status, message, code, type_)
