"""UsageTap: usage from JSON and SSE bodies, the injected usage chunk stripped at any chunking."""

from __future__ import annotations

import gzip
import json

import pytest

from keyguard.gateway.usage import UsageTap, request_usage_upstream

SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]


def sse_stream(crlf: bool = False) -> tuple[bytes, bytes]:
    """(what the upstream sends with include_usage, what a client that did not ask sees)."""
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    events = [
        {"choices": [{"index": 0, "delta": {"content": w}}], "usage": None} for w in ("a", "b")
    ]
    final = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    body = [b"data: " + json.dumps(e).encode() + sep for e in events]
    usage = b"data: " + json.dumps(final).encode() + sep
    done = b"data: [DONE]" + sep
    return b"".join([*body, usage, done]), b"".join([*body, done])


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_strip_usage_chunk_at_any_chunking(size: int, crlf: bool) -> None:
    upstream, expected = sse_stream(crlf)
    tap = UsageTap(strip_usage_chunk=True)
    assert tap.start(200, SSE, None) is None
    out = b"".join(tap.feed(upstream[i : i + size]) for i in range(0, len(upstream), size))
    out += tap.end()
    assert out == expected
    assert tap.usage is not None and tap.usage.total == 7


def test_client_asked_for_usage_passes_everything() -> None:
    upstream, _ = sse_stream()
    tap = UsageTap()
    tap.start(200, SSE, None)
    out = b"".join(tap.feed(upstream[i : i + 5]) for i in range(0, len(upstream), 5)) + tap.end()
    assert out == upstream
    assert tap.usage is not None and tap.usage.input_tokens == 5


def test_responses_api_completed_event() -> None:
    ev = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 4, "output_tokens": 6}},
    }
    data = b"event: response.completed\ndata: " + json.dumps(ev).encode() + b"\n\n"
    tap = UsageTap()
    tap.start(200, SSE, None)
    assert tap.feed(data) == data
    tap.end()
    assert tap.usage is not None and tap.usage.total == 10


def test_json_body_plain_and_gzip() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 8, "completion_tokens": 1}}).encode()
    for encoding, data in ((b"identity", body), (b"gzip", gzip.compress(body))):
        tap = UsageTap()
        assert tap.start(200, [*JSON, (b"content-encoding", encoding)], len(data)) == len(data)
        assert tap.feed(data[:3]) + tap.feed(data[3:]) == data
        tap.end()
        assert tap.usage is not None and tap.usage.total == 9


def test_errors_report_nothing_and_oversized_bodies_are_read_from_their_end() -> None:
    tap = UsageTap()
    tap.start(400, JSON, None)
    tap.feed(b'{"usage": {"prompt_tokens": 1}}')
    tap.end()
    assert tap.usage is None
    big = UsageTap(max_json=10)
    big.start(200, JSON, None)
    big.feed(b'{"note": "usage", "usage" : {"prompt_tokens": 1}}')
    big.end()
    assert big.usage is not None and big.usage.input_tokens == 1
    bad = UsageTap(max_json=10)
    bad.start(200, JSON, None)
    bad.feed(b'{"usage": {"prompt_tokens": 1, "completion_tokens": [')
    bad.end()
    assert bad.usage is None


def test_request_rewrite() -> None:
    body = {"model": "m", "stream": True}
    assert request_usage_upstream("/v1/chat/completions", body)
    assert body["stream_options"] == {"include_usage": True}
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert not request_usage_upstream("/v1/chat/completions", asked)
    assert not request_usage_upstream("/v1/chat/completions", {"stream": False})
    assert not request_usage_upstream("/v1/responses", {"stream": True})
