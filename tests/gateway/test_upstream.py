"""The upstream connection: verified TLS, pinned host, no redirects, failures → 502/504."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
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


class _RawUpstream:
    """A plain-HTTP upstream on loopback that answers the n-th request (1, 2, ...) with the
    byte strings ``script(n)`` returns, written one after another 50 ms apart."""

    def __init__(self, script: Callable[[int], list[bytes]]) -> None:
        self.script = script
        self.count = 0
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the gateway may cut a bad connection
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
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
            for i, piece in enumerate(self.script(self.count)):
                if i:
                    time.sleep(0.05)
                conn.sendall(piece)

    def close(self) -> None:
        self._srv.close()


def _ok(n: int) -> bytes:
    body = b'{"answer": %d}' % n
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )


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
    evil = _RawUpstream(lambda n: [_ok(n) + extra] if in_same_write else [_ok(n), extra])
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


_BAD_FRAMING = [
    # Content-Length and Transfer-Encoding together (the body really is chunked)
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
    # two different lengths
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 10\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 10\r\n\r\n0123456789",
    # a transfer coding the gateway cannot frame
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n0123456789",
    # a bad chunk size, a header line without a colon, a CR inside a value
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n0123\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBroken header\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 99\r\nContent-Length: 2\r\n\r\nok",
    # headers without end (far over any sane size)
    b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 200_000 + b"\r\n",
]


@pytest.mark.parametrize("response", _BAD_FRAMING)
def test_bad_upstream_framing_never_desyncs_the_client(
    gateway: RunningGateway, vault: Vault, make_key: Any, real_key: str, response: bytes
) -> None:
    """Whatever framing the upstream sends, the client gets a 502, a response whose body is
    exactly as long as its own framing says, or (when the upstream never ends it) a response
    cut short with the connection closed — and a kept-alive connection stays in step: the next
    request on it gets its own answer."""
    raw = _RawUpstream(lambda n: [response] if n == 1 else [_ok(n)])
    try:
        name = _upstream(
            vault, real_key, f"http://127.0.0.1:{raw.port}/v1", allow_insecure_loopback=True
        )
        token = make_key(upstream=name)
        auth = b"Authorization: Bearer " + token.encode() + b"\r\n"
        one = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
        with connect(gateway) as s:
            s.sendall(one)
            (first,) = read_responses(s, 1)
            assert first.status in (200, 502), first.body
            if first.status == 502:
                assert b"invalid HTTP response" in first.body
            elif b"content-length" in first.headers:
                assert len(first.body) == int(first.headers[b"content-length"])
            if not first.complete:  # cut short (the upstream never finished): closed
                assert s.recv(1) == b""
                return
            if first.headers.get(b"connection") == b"close":
                return  # the gateway ended this connection cleanly
            s.sendall(one)
            rs = read_responses(s, 1)
        assert [r.status for r in rs] == [200], rs and rs[0].body
        assert rs[0].json() == {"answer": raw.count}
    finally:
        raw.close()


def test_upstream_trailers_never_become_response_headers(
    gateway: RunningGateway, vault: Vault, make_key: Any, real_key: str
) -> None:
    body = b'{"ok": true}'
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\nX-Evil: 1\r\nSet-Cookie: session=stolen\r\n\r\n" % (len(body), body)
    )
    raw = _RawUpstream(lambda n: [chunked])  # head, body and trailers in one write
    try:
        name = _upstream(
            vault, real_key, f"http://127.0.0.1:{raw.port}/v1", allow_insecure_loopback=True
        )
        token = make_key(upstream=name)
        for _ in range(2):
            r = request(gateway, "GET", "/v1/models", token=token)
            assert r.status == 200 and r.body == body
            assert b"x-evil" not in r.headers and b"set-cookie" not in r.headers
    finally:
        raw.close()


def _no_key_fragment(body: bytes, key: str) -> None:
    text = body.decode()
    assert "*" * 4 not in text, text
    assert key[:8] not in text and key[8:12] not in text, text


def test_upstream_401_never_shows_the_masked_real_key(
    gateway: RunningGateway, vault: Vault, ca: trustme.CA, make_key: Any, transcript: Transcript
) -> None:
    """OpenAI's 401 quotes the key it was sent, masked but with nine of its characters: the
    virtual-key holder gets the message with the key removed."""
    from keyguard.domain.keys import generate_openai_style_key

    revoked = generate_openai_style_key()  # the vault's key, no longer valid at OpenAI
    with FakeOpenAI(ca, []) as up:
        name = _upstream(vault, revoked, up.base_url)
        r = request(
            gateway, "GET", "/v1/models", token=make_key(upstream=name), transcript=transcript
        )
    assert r.status == 401
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key"
    assert err["message"].startswith("Incorrect API key provided: [redacted key].")
    _no_key_fragment(r.body, revoked)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "oversized"])
def test_upstream_error_bodies_are_cleaned_in_any_encoding(
    gateway: RunningGateway, vault: Vault, make_key: Any, real_key: str, encoding: str
) -> None:
    import gzip
    import json as _json
    import zlib

    from fakes.openai_upstream import incorrect_key_message

    doc = {"error": {"message": incorrect_key_message(real_key), "code": "invalid_api_key"}}
    plain = _json.dumps(doc).encode()
    if encoding == "gzip":
        payload = gzip.compress(plain)
    elif encoding == "deflate":
        payload = zlib.compress(plain)
    elif encoding == "br":
        payload = plain  # labelled br: keyguard cannot read it, so it must not pass it on
    else:
        payload, encoding = plain + b" " * 70_000, "identity"
    head = (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (encoding.encode(), len(payload))
    )
    raw = _RawUpstream(lambda n: [head + payload])
    try:
        name = _upstream(
            vault, real_key, f"http://127.0.0.1:{raw.port}/v1", allow_insecure_loopback=True
        )
        r = request(gateway, "GET", "/v1/models", token=make_key(upstream=name))
    finally:
        raw.close()
    assert r.status == 401
    assert b"content-encoding" not in r.headers
    assert int(r.headers[b"content-length"]) == len(r.body)
    _no_key_fragment(r.body, real_key)
    message = r.json()["error"]["message"]
    if encoding in ("gzip", "deflate"):
        assert message.startswith("Incorrect API key provided: [redacted key].")
    else:
        assert message == "the upstream answered 401"


def test_upstream_is_never_asked_for_codings_keyguard_cannot_read(
    gateway: RunningGateway, upstream: FakeOpenAI, make_key: Any
) -> None:
    """Usage and error bodies are read from responses: a br/zstd answer would hide both."""
    token = make_key()
    for sent, got in [("br, zstd", "identity"), ("gzip, br", "gzip"), ("*", "gzip, deflate")]:
        r = request(gateway, "GET", "/v1/models", token=token, headers={"Accept-Encoding": sent})
        assert r.status == 200
        assert upstream.requests[-1]["headers"]["accept-encoding"] == got
