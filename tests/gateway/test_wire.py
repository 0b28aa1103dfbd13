"""HTTP/1.1 robustness over raw sockets: bad requests are rejected cleanly, the gateway serves on.

The test gateway's limits (conftest): headers 8 KiB / 64 lines, body 4 MiB, header timeout 1 s.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, connect, read_responses
from keyguard.gateway.server import RunningGateway


def _exchange(gw: RunningGateway, raw: bytes, transcript: Transcript | None = None) -> Any:
    with connect(gw) as s:
        s.sendall(raw)
        got = read_responses(s, 1, transcript)
    return got[0] if got else None


def _still_serving(gw: RunningGateway) -> None:
    r = _exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r is not None and r.status == 200


def _auth(token: str) -> bytes:
    return b"Authorization: Bearer " + token.encode() + b"\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Content-Length: 6\r\n\r\nhello!",
            400,
        ),
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Content-Length: 5\r\n\r\nhello",
            400,
        ),
        (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            400,
        ),
        (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 400),
        (
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\n\r\n",
            400,
        ),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 70 + b"\r\n", 431),
        (b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GARBAGE\r\n\r\n", 400),
    ],
)
def test_malformed_requests_rejected(
    gateway: RunningGateway, transcript: Transcript, raw: bytes, status: int
) -> None:
    r = _exchange(gateway, raw, transcript)
    assert r is not None and r.status == status, (r and r.status, r and r.body)
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert r.headers[b"connection"] == b"close"
    _still_serving(gateway)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin",
        "/v1/./models",
        "/v1/files/..",
        "/v1/%2e%2e/x",
        "/v1/%2E./x",
        "/v1/files%2f..%2fx",
        "/v1//models",
        "/v1/a\\..\\b",
        "/v1/a%00",
        "/v1/a%252e%252e/x",
        "/admin",
        "/",
        "/v2/models",
    ],
)
def test_paths_never_escape(
    gateway: RunningGateway, make_key: Any, upstream: FakeOpenAI, path: str
) -> None:
    before = len(upstream.requests)
    raw = (f"GET {path} HTTP/1.1\r\nHost: x\r\n").encode() + _auth(make_key()) + b"\r\n"
    r = _exchange(gateway, raw)
    assert r is not None and r.status in (400, 404), (path, r and r.status)
    assert len(upstream.requests) == before
    _still_serving(gateway)


def test_slow_headers_time_out(gateway: RunningGateway) -> None:
    with connect(gateway) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /v1/models HTTP/1.1\r\n")
        for _ in range(4):  # trickle bytes: they must not extend the deadline
            time.sleep(0.3)
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                break
        got = read_responses(s, 1)
        elapsed = time.monotonic() - t0
    assert got and got[0].status == 408
    assert elapsed < 3
    _still_serving(gateway)


def test_idle_connection_without_request_is_closed(gateway: RunningGateway) -> None:
    with connect(gateway) as s:
        s.settimeout(5)
        got = read_responses(s, 1)
    assert got and got[0].status == 408


def test_chunked_body_too_large(gateway: RunningGateway, make_key: Any) -> None:
    with connect(gateway) as s:
        s.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + _auth(make_key())
            + b"\r\n"
        )
        chunk = b"x" * 65536
        try:
            for _ in range(80):  # 5 MiB > 4 MiB limit
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass
        got = read_responses(s, 1)
    assert got and got[0].status == 413
    _still_serving(gateway)


def test_chunked_request_streams_through(gateway: RunningGateway, make_key: Any) -> None:
    with connect(gateway) as s:
        s.sendall(
            b"POST /v1/test/echo-size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n" + _auth(make_key()) + b"\r\n"
        )
        for _ in range(10):
            s.sendall(b"400\r\n" + b"y" * 1024 + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        (r,) = read_responses(s, 1)
    assert r.status == 200 and r.json() == {"bytes": 10240, "chunked": True}


def test_expect_100_continue(gateway: RunningGateway, make_key: Any) -> None:
    body = b'{"model": "gpt-4o-mini", "input": "x"}'
    head = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(body)
    )
    with connect(gateway) as s:
        s.sendall(head + _auth(make_key()) + b"\r\n")
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        (r,) = read_responses(s, 1)
    assert r.status == 200
    # a denied request gets its answer without 100 Continue, and the body is never sent
    with connect(gateway) as s:
        s.sendall(head + b"Authorization: Bearer nope\r\n\r\n")
        first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 401")


def test_pipelined_requests_answered_in_order(gateway: RunningGateway, make_key: Any) -> None:
    token = make_key()
    one = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + _auth(token) + b"\r\n"
    two = b"GET /v1/test/headers HTTP/1.1\r\nHost: x\r\n" + _auth(token) + b"\r\n"
    with connect(gateway) as s:
        s.sendall(one + two + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = read_responses(s, 3)
    assert [r.status for r in rs] == [200, 200, 200]
    assert b'"object": "list"' in rs[0].body
    assert b'"names"' in rs[1].body
    assert rs[2].body == b'{"status":"ok"}'


def test_garbage_after_pipelined_request(gateway: RunningGateway, make_key: Any) -> None:
    good = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + _auth(make_key()) + b"\r\n"
    with connect(gateway) as s:
        s.sendall(good + b"BROKEN REQUEST\r\n\r\n")
        rs = read_responses(s, 2)
        assert s.recv(1) == b""
    # the good one is answered, then the rejection, then the connection closes
    assert [r.status for r in rs] == [200, 400]
    assert rs[1].headers.get(b"connection") == b"close"
    _still_serving(gateway)


def test_bad_chunk_inside_a_streaming_body(
    gateway: RunningGateway, upstream: FakeOpenAI, make_key: Any
) -> None:
    """A malformed chunk after the body started streaming upstream: 400 at once (not after the
    body timeout), the upstream never gets a complete request, the gateway serves on."""
    seen = len(upstream.requests)
    with connect(gateway) as s:
        s.sendall(
            b"POST /v1/test/echo-size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n"
            + _auth(make_key())
            + b"\r\n"
            + b"400\r\n"
            + b"y" * 1024
            + b"\r\n"
        )
        time.sleep(0.2)  # the body is streaming to the upstream by now
        started = time.monotonic()
        s.sendall(b"zz-not-hex\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n")
        rs = read_responses(s, 1)
        assert s.recv(1) == b""
    assert time.monotonic() - started < 2.0
    assert [r.status for r in rs] == [400]
    assert rs[0].json()["error"]["code"] == "bad_request"
    time.sleep(0.2)
    assert upstream.requests[seen:] == []
    _still_serving(gateway)


def test_http10_request(gateway: RunningGateway, make_key: Any) -> None:
    r = _exchange(gateway, b"GET /v1/models HTTP/1.0\r\n" + _auth(make_key()) + b"\r\n")
    assert r is not None and r.status == 200 and b"gpt-4o-mini" in r.body


def test_health_and_readiness(gateway: RunningGateway) -> None:
    for path, body in ((b"/healthz", b'{"status":"ok"}'), (b"/readyz", b'{"status":"ready"}')):
        r = _exchange(gateway, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status == 200 and r.body == body


def test_many_bad_connections_then_serving(gateway: RunningGateway) -> None:
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", gateway.port))
        s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # a TLS hello to plain HTTP
        s.close()
    _still_serving(gateway)


def test_slow_body_times_out(gateway_config: Any, vault: Any, make_key: Any) -> None:
    from dataclasses import replace

    from keyguard.gateway.server import run_in_thread

    cfg = replace(gateway_config, limits=replace(gateway_config.limits, body_timeout=0.5))
    with run_in_thread(cfg, vault) as gw, connect(gw) as s:
        s.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n" + _auth(make_key()) + b"\r\n" + b'{"model": '
        )
        t0 = time.monotonic()
        got = read_responses(s, 1)
    assert got and got[0].status == 408
    assert time.monotonic() - t0 < 5


def test_request_trailers_never_become_upstream_headers(
    gateway: RunningGateway, upstream: FakeOpenAI, make_key: Any
) -> None:
    """Trailer fields arrive after the checks ran (e.g. a second Content-Type): they are
    dropped, never added to the headers the upstream receives."""
    seen = len(upstream.requests)
    body = b'{"model": "gpt-4o-mini"}'
    with connect(gateway) as s:
        s.sendall(
            b"POST /v1/test/headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n"
            + _auth(make_key(allowed_models=["gpt-4o-mini"]))
            + b"\r\n%x\r\n%s\r\n0\r\nX-Injected: yes\r\n" % (len(body), body)
            + b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        rs = read_responses(s, 2)
    assert [r.status for r in rs] == [200, 200]
    (got,) = upstream.requests[seen:]
    assert "x-injected" not in got["headers"]
    assert got["headers"]["content-type"] == "application/json"
    assert "x-injected" not in rs[0].json()["names"]
