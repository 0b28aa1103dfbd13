"""Request framing under random pipelining and segmentation: no smuggling, no lost body bytes.

Hypothesis builds a keep-alive stream of requests (bodies framed by Content-Length or chunked
with random chunk sizes and extensions, or none), optionally ending in one request whose framing
is ambiguous or malformed, and sends it to the real gateway over a socket cut at random points.
For every well-framed request the fake upstream must receive exactly one request with exactly
that body; the bad one must be answered 400 (or the connection closed) without anything of it,
or after it, reaching the upstream.
"""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import connect, read_responses
from keyguard.gateway.server import RunningGateway

# requests whose framing an HTTP/1.1 intermediary must refuse (each once seen in the wild as a
# request-smuggling vector); the path is the echo endpoint, so if one got through the upstream
# would record it
_SMUGGLERS = [
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
    b"Content-Length: 4, 4\r\n\r\nabcd",
    b"Content-Length: +4\r\n\r\nabcd",
    b"Content-Length: 0x4\r\n\r\nabcd",
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",  # obs-fold
    b"Transfer-Encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcdEXTRA\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabcd\r\n0\r\n\r\n",
    b"Content-Length : 4\r\n\r\nabcd",
]


@st.composite
def body_request(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """``(raw request minus the auth line marker, body length, sent chunked)``."""
    body = draw(st.binary(max_size=3000))
    framing = draw(
        st.sampled_from(["length", "chunked", "none"])
        if not body
        else st.sampled_from(["length", "chunked"])
    )
    head = (
        b"POST /v1/test/echo-size HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    )
    head += b"@AUTH@"
    if framing == "none":
        return head + b"\r\n", 0, False
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, len(body), False
    sizes = draw(st.lists(st.integers(min_value=1, max_value=700), max_size=8))
    chunks, rest = [], body
    for n in sizes:
        if not rest:
            break
        chunks.append(rest[:n])
        rest = rest[n:]
    if rest:
        chunks.append(rest)
    out = head + b"Transfer-Encoding: chunked\r\n\r\n"
    for c in chunks:
        ext = draw(st.sampled_from([b"", b";x=1", b';name="v"']))
        hexlen = b"%x" % len(c)
        out += (hexlen.upper() if draw(st.booleans()) else hexlen) + ext + b"\r\n" + c + b"\r\n"
    out += b"0\r\n"
    if draw(st.booleans()):
        out += b"X-Trailer: t\r\n"
    return out + b"\r\n", len(body), True


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for c in cuts:
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    return [p for p in pieces if p]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    reqs=st.lists(body_request(), min_size=1, max_size=4),
    smuggler=st.none() | st.sampled_from(_SMUGGLERS),
    points=st.lists(st.integers(min_value=0, max_value=20_000), max_size=6),
)
def test_framing_is_exact_under_pipelining_and_segmentation(
    gateway: RunningGateway,
    upstream: FakeOpenAI,
    make_key: Any,
    reqs: list[tuple[bytes, int, bool]],
    smuggler: bytes | None,
    points: list[int],
) -> None:
    auth = b"Authorization: Bearer " + make_key().encode() + b"\r\n"
    stream = b"".join(raw.replace(b"@AUTH@", auth) for raw, _, _ in reqs)
    if smuggler is not None:
        stream += b"POST /v1/test/echo-size HTTP/1.1\r\nHost: x\r\n" + auth + smuggler
        # a request hidden behind the bad one: must never reach the upstream
        stream += b"GET /v1/test/echo-size HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    seen_before = len(upstream.requests)
    with connect(gateway) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in _cut(stream, points):
            s.sendall(piece)
        got = read_responses(s, len(reqs) + (1 if smuggler is not None else 0))
    answered = got[: len(reqs)]
    assert [r.status for r in answered] == [200] * len(reqs)
    for r, (_, size, _chunked) in zip(answered, reqs, strict=True):
        assert r.json()["bytes"] == size
    if smuggler is not None:
        extra = got[len(reqs) :]
        assert not extra or extra[0].status == 400
    forwarded = upstream.requests[seen_before:]
    assert [f["body_len"] for f in forwarded] == [size for _, size, _ in reqs]
