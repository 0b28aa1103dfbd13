"""The upstream connection: verified TLS, pinned host, no redirects, failures → 502/504."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from typing import Any

import pytest
import trustme

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, connect, read_responses, request
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.vault import Vault

_names = iter(range(1000))


def _upstream(vault: Vault, real_key: str, base_url: str, **kw: Any) -> str:
    name = f"up{next(_names)}"
    vault.add_upstream(name, Secret(real_key), base_url=base_url, **kw)
    return name


def _check_error(r: Any, status: int, real_key: str) -> None:
    assert r.status == status, r.body
    assert r.json()["error"]["type"] == "server_error"
    assert real_key.encode() not in r.body and b"127.0.0.1" not in r.body


def test_upstream_ca_not_trusted_is_refused(
    gateway_config: GatewayConfig,
    vault: Vault,
    make_key: Any,
    real_key: str,
    upstream: FakeOpenAI,
    transcript: Transcript,
) -> None:
    cfg = replace(gateway_config, upstream_ca_bundle=None)  # system trust store only
    with run_in_thread(cfg, vault) as gw:
        r = request(gw, "GET", "/v1/models", token=make_key(), transcript=transcript)
    _check_error(r, 502, real_key)
    assert b"certificate could not be verified" in r.body


def test_upstream_hostname_mismatch_is_refused(
    gateway: RunningGateway,
    vault: Vault,
    ca: trustme.CA,
    make_key: Any,
    real_key: str,
    transcript: Transcript,
) -> None:
    with FakeOpenAI(ca, [real_key], cert_names=("api.other.example",)) as other:
        name = _upstream(vault, real_key, other.base_url)
        r = request(
            gateway, "GET", "/v1/models", token=make_key(upstream=name), transcript=transcript
        )
        assert other.requests == []
    _check_error(r, 502, real_key)


def test_plain_http_upstream_needs_loopback_opt_in(
    gateway: RunningGateway, vault: Vault, make_key: Any, real_key: str, transcript: Transcript
) -> None:
    with FakeOpenAI(None, [real_key]) as plain:
        with pytest.raises(ConfigError):
            _upstream(vault, real_key, plain.base_url)
        name = _upstream(vault, real_key, plain.base_url, allow_insecure_loopback=True)
        r = request(
            gateway, "GET", "/v1/models", token=make_key(upstream=name), transcript=transcript
        )
        assert r.status == 200
        plain.assert_clean()
    with pytest.raises(ConfigError):
        _upstream(vault, real_key, "http://api.example.com/v1", allow_insecure_loopback=True)


def test_redirect_is_passed_back_not_followed(
    gateway: RunningGateway, make_key: Any, upstream: FakeOpenAI, transcript: Transcript
) -> None:
    before = len(upstream.requests)
    r = request(gateway, "GET", "/v1/test/redirect", token=make_key(), transcript=transcript)
    assert r.status == 302
    assert r.headers[b"location"] == b"https://attacker.invalid/steal"
    assert len(upstream.requests) == before + 1


def test_upstream_down_is_502(
    gateway: RunningGateway, vault: Vault, make_key: Any, real_key: str, transcript: Transcript
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    name = _upstream(vault, real_key, f"https://127.0.0.1:{port}/v1")
    r = request(gateway, "GET", "/v1/models", token=make_key(upstream=name), transcript=transcript)
    _check_error(r, 502, real_key)


def test_upstream_stall_is_504(
    gateway: RunningGateway, make_key: Any, real_key: str, transcript: Transcript
) -> None:
    t0 = time.monotonic()
    r = request(gateway, "GET", "/v1/test/stall", token=make_key(), transcript=transcript)
    _check_error(r, 504, real_key)
    assert time.monotonic() - t0 < 10
    assert request(gateway, "GET", "/healthz").status == 200


def test_client_disconnect_cancels_upstream(
    gateway: RunningGateway, make_key: Any, upstream: FakeOpenAI
) -> None:
    upstream.disconnects.clear()
    s = connect(gateway)
    s.sendall(
        b"GET /v1/test/slow-stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + make_key().encode()
        + b"\r\n\r\n"
    )
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200")
    s.close()
    assert upstream.disconnects.wait(5), "the upstream request was not cancelled"


def test_sse_chunks_arrive_unbuffered(gateway: RunningGateway, make_key: Any) -> None:
    s = connect(gateway)
    s.sendall(
        b"GET /v1/test/slow-stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + make_key().encode()
        + b"\r\n\r\n"
    )
    got = b""
    t0 = time.monotonic()
    while b'"n": 2' not in got:
        got += s.recv(4096)
    # three events paced 50 ms apart arrive long before the 10 s stream ends
    assert time.monotonic() - t0 < 3
    assert b"transfer-encoding: chunked" in got.lower()
    s.close()


def test_keep_alive_reuses_upstream_connections(gateway: RunningGateway, make_key: Any) -> None:
    token = make_key()
    s = connect(gateway)
    for _ in range(3):
        s.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\n\r\n"
        )
        (r,) = read_responses(s, 1)
        assert r.status == 200 and r.complete
    s.close()


def test_close_delimited_upstream_body(gateway: RunningGateway, make_key: Any) -> None:
    r = request(gateway, "GET", "/v1/test/close-delimited", token=make_key())
    assert r.status == 200 and r.complete
    assert r.body == b"until-close " * 1000


def test_head_request(gateway: RunningGateway, make_key: Any) -> None:
    r = request(gateway, "HEAD", "/v1/models", token=make_key())
    assert r.status in (200, 501) and r.body == b""
    assert request(gateway, "GET", "/healthz").status == 200


class _ExtraBytesUpstream:
    """A plain-HTTP upstream that answers each request correctly, then (``extra``) sends bytes
    nobody asked for on the idle keep-alive connection: the start of a forged response."""

    def __init__(self, extra: bytes, in_same_write: bool) -> None:
        self.extra = extra
        self.same = in_same_write
        self.count = 0
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        import threading

        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.count += 1
                body = b'{"answer": %d}' % self.count
                ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                ok += b"Content-Length: %d\r\n\r\n" % len(body) + body
                if self.same:
                    conn.sendall(ok + self.extra)
                else:
                    conn.sendall(ok)
                    time.sleep(0.05)
                    conn.sendall(self.extra)

    def close(self) -> None:
        self._srv.close()


@pytest.mark.parametrize("in_same_write", [True, False])
@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n",  # a forged head, body to come
        b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"forged": true}',  # a whole response
        b"garbage",
    ],
)
def test_unsolicited_upstream_bytes_never_reach_the_next_request(
    gateway: RunningGateway,
    vault: Vault,
    make_key: Any,
    real_key: str,
    extra: bytes,
    in_same_write: bool,
) -> None:
    """Bytes an upstream sends after a complete response poison that connection: it is never
    reused, so they cannot become (part of) the answer to the next request, whoever sends it."""
    evil = _ExtraBytesUpstream(extra, in_same_write)
    try:
        name = _upstream(
            vault, real_key, f"http://127.0.0.1:{evil.port}/v1", allow_insecure_loopback=True
        )
        token = make_key(upstream=name)
        for i in range(1, 4):
            r = request(gateway, "GET", "/v1/models", token=token)
            time.sleep(0.1)  # the extra bytes have arrived on the pooled connection
            assert r.status == 200, r.body
            assert b"forged" not in r.body
            assert r.json() == {"answer": evil.count}, (i, r.body)
    finally:
        evil.close()
