"""Wire-level limits of the HTTP server and the ways one request's framing can fail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """Wire-level limits; every one is configurable (see ``GatewayConfig``)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 64 * 1024 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    body_buffer_high: int = 256 * 1024
    #: longest pause while receiving a request body (408 / connection closed)
    body_timeout: float = 60.0


class Reject(Exception):
    """A request refused at the wire level: answered here, then the connection closes."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


class MalformedBody(Exception):
    """The request body broke HTTP framing (e.g. a bad chunk size) while it was streaming."""


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit while streaming."""
