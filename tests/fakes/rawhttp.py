"""Raw HTTP/1.1 over sockets for tests: pick the source address, send malformed requests.

``request(gw, ...)`` sends one request on a fresh connection; ``connect``/``read_responses``
give full control (keep-alive, pipelining, slow clients). ``gw`` is anything with ``.port``.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import httptools


class Transcript:
    """Everything clients received during the session (for the sentinel check)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, data: bytes | str) -> None:
        self.chunks.append(data.encode() if isinstance(data, str) else data)


# ---- raw HTTP over sockets (vary the source address, send malformed requests) ---------------


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def json(self) -> Any:
        return json.loads(self.body)


def connect(gw: Any, source: str = "127.0.0.1") -> socket.socket:
    if ":" in source:
        s = socket.create_connection(("::1", gw.port), timeout=10)
    else:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=(source, 0))
    return s


class _Collector:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self.current: Response | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.on_header(name, value)

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.complete = True
        if self.current.status >= 200:
            self.done.append(self.current)
        self.current = None


def read_responses(
    sock: socket.socket, count: int = 1, transcript: Transcript | None = None
) -> list[Response]:
    """Read ``count`` final responses (or until the server closes); 1xx are skipped."""
    c = _Collector()
    while len(c.done) < count:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if transcript is not None and data:
            transcript.add(data)
        if not data:
            with contextlib.suppress(httptools.HttpParserError):
                c.parser.feed_data(b"")
            break
        c.parser.feed_data(data)
    if c.current is not None and c.current.status and len(c.done) < count:
        c.done.append(c.current)  # incomplete (connection cut): returned with complete=False
    return c.done


def request(
    gw: Any,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    transcript: Transcript | None = None,
) -> Response:
    """One request on a fresh connection (``Connection: close``)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: keyguard.test", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with connect(gw, source) as s:
        s.sendall(raw)
        got = read_responses(s, 1, transcript)
    assert got, "no response"
    return got[0]


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port


def wait_ready(proc: Any, port: int, timeout: float = 30.0) -> None:
    """Wait until the ``keyguard serve`` process ``proc`` answers /readyz with 200 on
    ``port`` (fails with its output if it exits first)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if request(_Port(port), "GET", "/readyz").status == 200:
                return
        except OSError:
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "gateway did not become ready"
        time.sleep(0.1)
