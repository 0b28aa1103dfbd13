"""The edge's wire (native/edge/src/wire): the built binary driven directly.

A tiny in-test supervisor writes Config/State lines on the edge's stdin (wire_harness.Edge), a
fake HTTPS upstream (fakes.openai_upstream, trustme CA) answers what the edge serves natively,
and a fake core on a unix socket (wire_harness.FakeCore) gets everything the edge hands off.
Every edge is stopped by EOF on stdin (exit 0) and must never have printed a key.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme

from edge.wire_harness import (
    CoreRequest,
    Edge,
    FakeCore,
    VKey,
    body_of,
    config,
    make_key,
    raw,
    route,
    state,
    status_of,
)
from fakes import fixtures as _fixtures
from fakes.openai_upstream import FakeOpenAI, masked
from keyguard.domain.keys import checksum, generate_openai_style_key

# the shared fake upstream and its CA (session fixtures of fakes.fixtures)
ca = _fixtures.ca
ca_bundle = _fixtures.ca_bundle
real_key = _fixtures.real_key
upstream = _fixtures.upstream

_ANY_VK = re.compile(r"kg_[0-9a-z]{12}[0-9A-Za-z]{50}")
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

Start = Callable[..., Edge]


@pytest.fixture
def core() -> Iterator[FakeCore]:
    d = Path(tempfile.mkdtemp(prefix="kgw"))  # short: unix socket paths are limited to 108
    try:
        with FakeCore(d / "core.sock") as c:
            yield c
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(
    edge_bin: Callable[[str], Path], core: FakeCore, ca_bundle: Path, real_key: str
) -> Iterator[Start]:
    """``start(keys, routes=None, native_limits=True, state=True, **config)`` -> Edge."""
    binary = edge_bin("keyguard-edge")
    edges: list[Edge] = []

    def run(
        keys: list[VKey] | None = None,
        routes: list[dict[str, Any]] | None = None,
        *,
        native_limits: bool = True,
        with_state: bool = True,
        **overrides: Any,
    ) -> Edge:
        line = None
        if with_state:
            assert routes is not None
            line = state(keys or [], routes, native_limits)
        edge = Edge.start(binary, config(core.path, ca_bundle, **overrides), line)
        edges.append(edge)
        return edge

    yield run
    for edge in edges:
        assert edge.stop() == 0, edge.stderr
        printed = edge.printed()
        assert real_key not in printed
        assert not _ANY_VK.search(printed), "a virtual key was printed"
        assert "Bearer" not in printed


def default_route(up: FakeOpenAI, key: str, **extra: Any) -> dict[str, Any]:
    return route("default", up.port, key, **extra)


def post(edge: Edge, path: str, token: str | None, body: Any = None, **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(
        edge.url + path, json=body if body is not None else CHAT, headers=headers, timeout=10, **kw
    )


# ---- happy paths ------------------------------------------------------------------------------
def test_sdk_sync_and_async_served_natively(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    client = openai.OpenAI(base_url=edge.url + "/v1", api_key=key.token, max_retries=0)
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert chat.choices[0].message.content
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2
    models = client.models.list()
    assert [m.id for m in models.data]
    client.close()

    async def go() -> str | None:
        async with openai.AsyncOpenAI(
            base_url=edge.url + "/v1", api_key=key.token, max_retries=0
        ) as ac:
            r = await ac.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "async"}]
            )
            return r.choices[0].message.content

    assert asyncio.run(go())
    assert core.empty(), "a natively served request reached the core"
    recs = edge.records(4)
    assert len(recs) == 4
    by_path = {(r["path"], r["model"]) for r in recs}
    assert ("/v1/chat/completions", "gpt-4o-mini") in by_path
    assert ("/v1/embeddings", "text-embedding-3-small") in by_path
    assert ("/v1/models", None) in by_path
    for r in recs:
        assert r["key_id"] == key.key_id
        assert r["status"] == 200 and r["upstream_status"] == 200
        assert r["upstream"] == "default" and r["version"] == 1
        assert r["client_ip"] == "127.0.0.1" and r["completed"] and not r["abandoned"]
        assert r["latency_ms"] > 0 and r["t"] > 1_600_000_000_000_000
    chat_rec = next(r for r in recs if r["path"] == "/v1/chat/completions")
    assert json.loads(chat_rec["usage"])["total_tokens"] == 6
    assert chat_rec["body"] is None  # usage seen: the supervisor needs no estimate
    assert chat_rec["body_size"] > 0
    upstream.assert_clean()  # the upstream saw the real key and never the virtual one


def models_request(token: str) -> bytes:
    return f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n".encode()


def test_records_carry_the_rendered_audit_row_and_priced_usage(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    """The supervisor only chains and counts: each record holds its audit row as the
    supervisor's UniformAppender would store it (under the routes' upstream keys) and, when
    the answer reported usage, its tokens and cost from the configured price table."""
    from edge.test_audit_parity import PRICES_JSON, python_render
    from keyguard.domain.pricing import PriceTable, usage_from_response

    prices_text = PRICES_JSON.read_text()
    table = PriceTable.from_mapping(json.loads(prices_text))
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)], prices_json=prices_text)
    assert post(edge, "/v1/chat/completions", key.token, CHAT).status_code == 200
    assert (
        httpx.get(
            edge.url + "/v1/models", headers={"authorization": f"Bearer {key.token}"}
        ).status_code
        == 200
    )
    assert core.empty()
    recs = edge.records(2)
    names = ("t", "key_id", "client_ip", "method", "path", "model", "status", "latency_ms")
    for rec in recs:
        fields = {n: rec[n] for n in names} | {
            "upstream": rec["upstream"],
            "version": rec["version"],
        }
        assert tuple(rec["audit"]) == python_render(fields, [real_key])
    chat = next(r for r in recs if r["path"] == "/v1/chat/completions")
    assert chat["tab"]  # rendered and priced: the supervisor's cheap tab-separated form
    prompt, completion = upstream.usage_tokens
    usage = usage_from_response(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    )
    assert usage is not None
    assert chat["tokens"] == usage.total
    assert chat["cost_nano"] == table.cost_nano(
        chat["model"], usage.input_tokens, usage.output_tokens, usage.cached_tokens
    )
    listing = next(r for r in recs if r["path"] == "/v1/models")
    assert "tokens" not in listing and "cost_nano" not in listing  # no usage: estimated


def test_an_unloadable_price_table_prices_nothing(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)], prices_json="{not json")
    assert post(edge, "/v1/chat/completions", key.token, CHAT).status_code == 200
    (rec,) = edge.records(1)
    assert rec["usage"] and "tokens" not in rec and "cost_nano" not in rec
    assert len(rec["audit"]) == 7
    edge.wait_log("price table does not load")


def test_sse_stream_from_unrestricted_key_is_streamed_natively(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    # bodies above the sniff limit are not read by the edge: streamed upstream as they come
    edge = start([key], [default_route(upstream, real_key)], audit_json_sniff_limit=16)
    client = openai.OpenAI(base_url=edge.url + "/v1", api_key=key.token, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    client.close()
    assert text
    assert core.empty()
    (rec,) = edge.records(1)
    assert rec["model"] is None and rec["status"] == 200 and rec["completed"]


def test_stream_true_in_a_sniffed_body_goes_to_the_core(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    r = post(edge, "/v1/chat/completions", key.token, {**CHAT, "stream": True})
    assert r.json() == {"core": True, "path": "/v1/chat/completions"}
    got = core.get()
    assert json.loads(got.body)["stream"] is True
    assert got.header("keyguard-edge-peer") == "127.0.0.1"


# ---- hand-offs to the core --------------------------------------------------------------------
def _assert_core_got(core: FakeCore, path: str, r: httpx.Response) -> CoreRequest:
    assert r.status_code == 200 and r.json()["core"] is True, r.text
    got = core.get()
    assert got.path == path
    assert got.header("keyguard-edge-peer") == "127.0.0.1"
    assert "keyguard-edge-admitted" not in got.names()
    assert "keyguard-edge-custom" not in got.names()
    return got


SPOOF = {
    "keyguard-edge-peer": "6.6.6.6",
    "keyguard-edge-admitted": "1",
    "keyguard-edge-custom": "x",
}


def test_before_the_first_state_everything_goes_to_the_core(start: Start, core: FakeCore) -> None:
    edge = start(with_state=False)
    r = httpx.get(edge.url + "/v1/models", headers=SPOOF)
    _assert_core_got(core, "/v1/models", r)
    assert edge.records(0, timeout=0.1) == []


def test_a_state_with_seq_is_acknowledged_once_applied(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    edge = start(with_state=False)
    key = make_key()
    line = json.loads(state([key], [default_route(upstream, real_key)]))
    edge.send_state(json.dumps({**line, "seq": 7}))
    deadline = time.monotonic() + 5
    applied = '{"type":"applied","seq":7,"ok":true}\n'
    while applied not in edge.stdout and time.monotonic() < deadline:
        time.sleep(0.01)
    assert applied in edge.stdout
    r = post(edge, "/v1/chat/completions", key.token)  # served with the new State
    assert r.status_code == 200 and "choices" in r.json()
    assert core.empty()
    edge.send_state(json.dumps({**line, "server_key": "not hex", "seq": 8}))
    edge.wait_log("refused")
    time.sleep(0.05)
    assert '{"type":"applied","seq":8,"ok":false}\n' in edge.stdout


def test_healthz_is_answered_natively(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    edge = start([], [default_route(upstream, real_key)])
    r = httpx.get(edge.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert core.empty()


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/readyz"),
        ("GET", "/admin/keys"),
        ("GET", "/v2/models"),
        ("GET", "/"),
        ("OPTIONS", "/v1/models"),
        ("GET", "/v1/models/%2e%2e/x"),
        ("GET", "/v1/../admin/keys"),
    ],
)
def test_paths_and_methods_the_edge_does_not_serve(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str, method: str, target: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    resp = raw(
        edge.port,
        f"{method} {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key.token}\r\n"
        "keyguard-edge-custom: x\r\nkeyguard-edge-peer: 6.6.6.6\r\n"
        "connection: close\r\n\r\n".encode(),
    )
    assert status_of(resp) == 200 and b'"core": true' in body_of(resp), resp[:200]
    got = core.get()
    assert got.path == target and got.method == method
    assert got.header("keyguard-edge-peer") == "127.0.0.1"
    assert "keyguard-edge-custom" not in got.names()


def _bad_token_variants(key: VKey) -> dict[str, dict[str, str]]:
    other = make_key()  # well-formed, but not in the State
    wrong_secret = key.token[:20] + ("A" if key.token[20] != "A" else "B") + key.token[21:]
    return {
        "missing": {},
        "not bearer": {"authorization": f"Basic {key.token}"},
        "too long": {"authorization": "Bearer " + "a" * 201},
        "malformed": {"authorization": "Bearer kg_short"},
        "bad checksum": {"authorization": f"Bearer {wrong_secret}"},
        "unknown id": {"authorization": f"Bearer {other.token}"},
    }


def test_failed_authentication_goes_to_the_core_and_is_throttled(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    variants = _bad_token_variants(key)
    edge = start([key], [default_route(upstream, real_key)], throttle_burst=len(variants))
    for headers in variants.values():
        r = httpx.post(edge.url + "/v1/chat/completions", json=CHAT, headers={**headers, **SPOOF})
        got = _assert_core_got(core, "/v1/chat/completions", r)
        assert json.loads(got.body) == CHAT
    # the burst is used up: even the valid key goes to the core (which answers the 429)
    r = post(edge, "/v1/chat/completions", key.token)
    _assert_core_got(core, "/v1/chat/completions", r)
    assert edge.records(0, timeout=0.2) == []


def test_wrong_secret_of_a_known_key_goes_to_the_core(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    impostor = make_key()
    # same key id, other secret: the checksum is right, the digest is not
    body = key.key_id + impostor.token[15:-6]
    token = "kg_" + body + checksum(body)
    edge = start([key], [default_route(upstream, real_key)])
    r = post(edge, "/v1/chat/completions", token)
    _assert_core_got(core, "/v1/chat/completions", r)


@pytest.mark.parametrize(
    "spec",
    [
        {"revoked": True},
        {"expires": 1_000_000.0},
        {"core_only": True},
        {"rpm": 10, "_native_limits": False},
        {"max_concurrency": 2, "_native_limits": False},
        {"upstream": "nowhere"},
        {"cidrs": ["not-a-network"]},
        {"cidrs": ["10.0.0.0/8"]},
        {"endpoints": ["/v1/embeddings"]},
        {"models": ["gpt-4o"]},
        {"digests": "expired"},
    ],
    ids=lambda s: ",".join(f"{k}" for k in s),
)
def test_keys_the_edge_does_not_serve(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str, spec: dict[str, Any]
) -> None:
    spec = dict(spec)
    native = spec.pop("_native_limits", True)
    key = make_key()
    if spec.get("digests") == "expired":
        key.entry["digests"] = [[key.entry["digests"][0][0], 1_000_000.0]]
        spec.pop("digests")
    key.entry.update(spec)
    edge = start([key], [default_route(upstream, real_key)], native_limits=native)
    r = post(edge, "/v1/chat/completions", key.token, headers=SPOOF)
    got = _assert_core_got(core, "/v1/chat/completions", r)
    assert json.loads(got.body) == CHAT
    assert got.header("authorization") == f"Bearer {key.token}"  # unchanged for the core
    assert edge.records(0, timeout=0.1) == []


def test_bad_forwarding_headers_go_to_the_core(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)], trusted_proxies=["127.0.0.1/32"])
    r = post(edge, "/v1/chat/completions", key.token, headers={"x-forwarded-for": "not an ip"})
    got = _assert_core_got(core, "/v1/chat/completions", r)
    assert got.header("x-forwarded-for") == "not an ip"
    # a good one from the trusted proxy: served natively, recorded with the forwarded address
    r = post(edge, "/v1/chat/completions", key.token, headers={"x-forwarded-for": "203.0.113.7"})
    assert r.status_code == 200 and "choices" in r.json()
    (rec,) = edge.records(1)
    assert rec["client_ip"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"content-type": "application/json", "content-encoding": "gzip"}, b"\x1f\x8b..."),
        ({"content-type": "text/plain"}, b"model=gpt-4o-mini"),
        ({"content-type": "multipart/form-data; boundary=x"}, b"--x--\r\n"),
        ({"content-type": "application/json"}, b"not json"),
        ({"content-type": "application/json"}, b"[1, 2]"),
        ({"content-type": "application/json"}, b'{"model": "gpt-4o-mini", "model": "gpt-4o"}'),
        ({"content-type": "application/json"}, b'{"model": 5}'),
    ],
)
def test_bodies_a_restricted_key_cannot_check_go_to_the_core(
    start: Start,
    core: FakeCore,
    upstream: FakeOpenAI,
    real_key: str,
    headers: dict[str, str],
    content: bytes,
) -> None:
    key = make_key(models=["gpt-4o-mini"])
    edge = start([key], [default_route(upstream, real_key)])
    r = httpx.post(
        edge.url + "/v1/chat/completions",
        content=content,
        headers={**headers, "authorization": f"Bearer {key.token}"},
    )
    got = _assert_core_got(core, "/v1/chat/completions", r)
    assert got.body == content


def test_restricted_key_with_an_allowed_model_is_served(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key(models=["gpt-4o-*"])
    edge = start([key], [default_route(upstream, real_key)])
    r = post(edge, "/v1/chat/completions", key.token)
    assert r.status_code == 200 and "choices" in r.json()
    r = post(edge, "/v1/chat/completions", key.token, {**CHAT, "model": "o1"})
    _assert_core_got(core, "/v1/chat/completions", r)


def test_a_body_over_the_limit_reaches_the_core_whole(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key(models=["gpt-4o-mini"])
    edge = start([key], [default_route(upstream, real_key)], max_body_bytes=1000)
    big = json.dumps({**CHAT, "pad": "x" * 5000}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the edge finds out while reading
        for i in range(0, len(big), 700):
            yield big[i : i + 700]

    r = httpx.post(
        edge.url + "/v1/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key.token}"},
    )
    got = _assert_core_got(core, "/v1/chat/completions", r)
    assert got.body == big


# ---- limits -----------------------------------------------------------------------------------
def test_rpm_limit_answers_429_natively(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key(rpm=2)
    edge = start([key], [default_route(upstream, real_key)])
    for _ in range(2):
        assert post(edge, "/v1/embeddings", key.token, {"model": "m", "input": "x"}).is_success
    r = post(edge, "/v1/embeddings", key.token, {"model": "m", "input": "x"})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"]
    assert core.empty()
    recs = edge.records(3)
    assert [x["status"] for x in recs] == [200, 200, 429]
    # refused before the upstream: nothing to charge, so the record is the tab-separated form
    assert recs[2]["tab"] and (recs[2]["tokens"], recs[2]["cost_nano"]) == (0, 0)


def test_concurrency_lease_is_held_until_the_response_ends(
    start: Start, core: FakeCore, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key(max_concurrency=1)
    edge = start([key], [default_route(upstream, real_key)])
    headers = {"authorization": f"Bearer {key.token}"}
    with httpx.stream("GET", edge.url + "/v1/test/slow-stream", headers=headers) as slow:
        assert slow.status_code == 200
        it = slow.iter_bytes()  # kept: a collected generator closes the response
        next(it)
        r = httpx.get(edge.url + "/v1/models", headers=headers)
        assert r.status_code == 429
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # released once the stream is gone
        r = httpx.get(edge.url + "/v1/models", headers=headers)
        if r.status_code == 200:
            break
        time.sleep(0.05)
    assert r.status_code == 200


# ---- upstream answers -------------------------------------------------------------------------
def test_401_with_a_fallback_is_replayed_through_the_core(
    start: Start, core: FakeCore, upstream: FakeOpenAI
) -> None:
    key = make_key(rpm=100)
    stale = generate_openai_style_key("proj")  # not accepted by the fake: it answers 401
    edge = start([key], [default_route(upstream, stale, fallback=True)])
    r = post(edge, "/v1/chat/completions", key.token)
    got = _assert_core_got_admitted(core, r)
    assert json.loads(got.body) == CHAT
    assert got.header("authorization") == f"Bearer {key.token}"
    assert edge.records(0, timeout=0.2) == []
    upstream.violations.clear()  # the stale key's 401 was the point


def _assert_core_got_admitted(core: FakeCore, r: httpx.Response) -> CoreRequest:
    assert r.status_code == 200 and r.json()["core"] is True, r.text
    got = core.get()
    assert got.header("keyguard-edge-admitted") == "1"
    assert got.header("keyguard-edge-peer") == "127.0.0.1"
    return got


def test_upstream_error_bodies_are_scrubbed(start: Start, upstream: FakeOpenAI) -> None:
    key = make_key()
    stale = generate_openai_style_key("proj")
    edge = start([key], [default_route(upstream, stale)])
    r = post(edge, "/v1/chat/completions", key.token)
    assert r.status_code == 401
    assert stale not in r.text and masked(stale) not in r.text and stale[-4:] not in r.text
    assert "error" in r.json()
    (rec,) = edge.records(1)
    assert rec["status"] == 401
    assert rec["tab"] and (rec["tokens"], rec["cost_nano"]) == (0, 0)  # >= 400: nothing charged
    upstream.violations.clear()


def test_unreachable_upstream_is_502_and_a_silent_one_504(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens once closed
    k1, k2 = make_key(upstream="dead"), make_key()
    edge = start(
        [k1, k2],
        [route("dead", dead, real_key), default_route(upstream, real_key)],
        upstream_timeout=1.0,
    )
    r = post(edge, "/v1/chat/completions", k1.token)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "server_error"
    t0 = time.monotonic()
    r = post(edge, "/v1/test/stall", k2.token)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 4
    recs = edge.records(2)
    assert recs[0]["status"] == 502 and (recs[0]["tokens"], recs[0]["cost_nano"]) == (0, 0)
    assert recs[1]["status"] == 504 and recs[1]["abandoned"]
    assert json.loads(recs[1]["body"]) == CHAT  # abandoned: the supervisor estimates


def _one_shot_upstream(answer: bytes) -> tuple[int, threading.Thread, socket.socket]:
    """A plain-HTTP upstream that answers one request with ``answer`` and then stays open."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(answer)
            time.sleep(1.0)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, srv


def test_a_broken_upstream_body_cuts_the_response_after_its_head(
    start: Start, real_key: str
) -> None:
    port, t, srv = _one_shot_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n0123\r\n0\r\n\r\n"
    )
    key = make_key()
    edge = start([key], [route("default", port, real_key, scheme="http")])
    with srv:
        resp = raw(
            edge.port,
            models_request(key.token),
        )
        t.join(5)
    assert status_of(resp) == 200  # the head went out, then the connection was cut
    assert not resp.endswith(b"0\r\n\r\n")
    (rec,) = edge.records(1)
    assert not rec["completed"] and rec["abandoned"]


def test_an_upstream_stalling_mid_body_is_cut(start: Start, real_key: str) -> None:
    port, t, srv = _one_shot_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n"
    )  # then silence for a second
    key = make_key()
    edge = start([key], [route("default", port, real_key, scheme="http")], upstream_timeout=0.4)
    with srv:
        t0 = time.monotonic()
        resp = raw(
            edge.port,
            models_request(key.token),
        )
        cut_after = time.monotonic() - t0
        t.join(5)
    assert status_of(resp) == 200 and b"data: " in resp
    assert 0.3 < cut_after < 0.9, cut_after
    (rec,) = edge.records(1)
    assert rec["abandoned"] and not rec["completed"]


def test_a_client_closing_right_after_the_last_event_is_a_completed_request(
    start: Start, real_key: str
) -> None:
    """openai's client closes right after ``data: [DONE]``, before the edge may have read the
    upstream's terminating chunk: the upstream did finish (it is already on its way), so the
    record is completed, not abandoned."""
    closed = threading.Event()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\ne\r\ndata: [DONE]\n\n\r\n"
            )
            closed.wait(5)
            time.sleep(0.002)
            conn.sendall(b"0\r\n\r\n")
            time.sleep(0.5)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    key = make_key()
    edge = start([key], [route("default", srv.getsockname()[1], real_key, scheme="http")])
    with srv, socket.create_connection(("127.0.0.1", edge.port)) as c:
        c.sendall(models_request(key.token))
        got = b""
        while b"[DONE]" not in got:
            more = c.recv(65536)
            assert more
            got += more
        c.close()
        closed.set()
        t.join(5)
    (rec,) = edge.records(1)
    assert rec["completed"] and not rec["abandoned"], rec


def test_client_disconnect_mid_stream_cancels_the_upstream(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    upstream.disconnects.clear()
    with httpx.stream(
        "GET", edge.url + "/v1/test/slow-stream", headers={"authorization": f"Bearer {key.token}"}
    ) as r:
        it = r.iter_bytes()
        next(it)
    assert upstream.disconnects.wait(5), "the upstream never noticed the client leaving"
    (rec,) = edge.records(1)
    assert rec["abandoned"] and not rec["completed"] and rec["upstream_status"] == 200


# ---- TLS --------------------------------------------------------------------------------------
def _tls_files(tmp: Path, ca: trustme.CA) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp / "edge.pem", tmp / "edge.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


def test_tls_termination(start: Start, tmp_path: Path, upstream: FakeOpenAI, real_key: str) -> None:
    server_ca = trustme.CA()
    cert, key_file = _tls_files(tmp_path, server_ca)
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)], tls_cert=cert, tls_key=key_file)
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    with httpx.Client(verify=ctx) as c:
        r = c.post(
            f"https://127.0.0.1:{edge.port}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {key.token}"},
        )
    assert r.status_code == 200 and "choices" in r.json()
    old = ssl.create_default_context()
    server_ca.configure_trust(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(("127.0.0.1", edge.port)) as s,
        old.wrap_socket(s, server_hostname="127.0.0.1"),
    ):
        pass


def test_mtls_requires_a_client_certificate(start: Start, tmp_path: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert, key_file = _tls_files(tmp_path, server_ca)
    ca_path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_path))
    edge = start([], [], tls_cert=cert, tls_key=key_file, client_ca=str(ca_path))
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    refused = (ssl.SSLError, OSError, httpx.TransportError)
    with pytest.raises(refused), httpx.Client(verify=ctx) as c:
        c.get(f"https://127.0.0.1:{edge.port}/healthz")
    client_ca.issue_cert("client@example").configure_cert(ctx)
    with httpx.Client(verify=ctx) as c:
        r = c.get(f"https://127.0.0.1:{edge.port}/healthz")
    assert r.status_code == 200


# ---- wire limits ------------------------------------------------------------------------------
def test_oversized_headers_431(start: Start) -> None:
    edge = start([], [], max_header_bytes=2048)
    big = b"x-big: " + b"a" * 4000 + b"\r\n"
    resp = raw(edge.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
    assert status_of(resp) == 431
    assert json.loads(body_of(resp))["error"]["code"] == "request_header_too_large"


def test_declared_body_over_the_limit_413(start: Start) -> None:
    edge = start([], [], max_body_bytes=1000)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
    resp = raw(edge.port, head)
    assert status_of(resp) == 413
    assert json.loads(body_of(resp))["error"]["code"] == "request_too_large"


def test_slow_headers_408(start: Start) -> None:
    edge = start([], [], header_timeout=0.5)
    t0 = time.monotonic()
    resp = raw(edge.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    assert status_of(resp) == 408
    assert 0.4 < time.monotonic() - t0 < 3


def test_idle_keepalive_connection_closes(start: Start) -> None:
    edge = start([], [], keepalive_timeout=0.5)
    t0 = time.monotonic()
    resp = raw(edge.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status_of(resp) == 200  # answered, then closed once idle
    assert 0.4 < time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
        b"content-length: 4\r\n\r\n0\r\n\r\n",
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
        b"content-length: 5\r\n\r\nhello",
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nbad header: y\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
        b"GET http://evil.example/v1/models HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "cl+te",
        "te+cl",
        "two-equal-cl",
        "negative-cl",
        "bad-header-name",
        "garbage",
        "te-not-chunked",
        "absolute-form",
        "two-hosts",
        "no-host",
    ],
)
def test_malformed_requests_400(start: Start, core: FakeCore, head: bytes) -> None:
    edge = start([], [])
    resp = raw(edge.port, head)
    assert status_of(resp) == 400, resp[:200]
    assert json.loads(body_of(resp))["error"]["code"] == "bad_request"
    assert b"connection: close" in resp.lower()
    assert core.empty()


def test_a_pipelined_smuggler_is_refused_after_the_request_before_it(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    auth = f"authorization: Bearer {key.token}\r\n".encode()
    line = b"POST /v1/test/echo-size HTTP/1.1\r\nhost: x\r\n" + auth
    good = line + b"content-length: 2\r\n\r\nhi"
    bad = line + b"transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"
    resp = raw(edge.port, good + bad)
    first, _, rest = resp.partition(b"}")
    assert status_of(first) == 200 and b'"bytes": 2' in first + b"}", resp[:400]
    assert status_of(rest) == 400, rest[:300]
    assert b"Content-Length together with Transfer-Encoding" in rest


def test_a_broken_chunked_body_while_streaming_is_400(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)])
    head = (
        "POST /v1/test/echo-size HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n"
        f"authorization: Bearer {key.token}\r\ntransfer-encoding: chunked\r\n\r\n"
    ).encode()
    resp = raw(edge.port, head + b"4\r\nabcd\r\nzz\r\n")
    assert status_of(resp) == 400, resp[:300]


def test_graceful_shutdown_finishes_in_flight(
    start: Start, upstream: FakeOpenAI, real_key: str
) -> None:
    key = make_key()
    edge = start([key], [default_route(upstream, real_key)], shutdown_grace=1.0)
    headers = {"authorization": f"Bearer {key.token}"}
    got = b""
    with httpx.stream("GET", edge.url + "/v1/test/slow-stream", headers=headers) as r:
        it = r.iter_bytes()
        got += next(it)
        assert edge.proc.stdin is not None
        edge.proc.stdin.close()  # EOF: stop accepting, let this one go on (up to the grace)
        t0 = time.monotonic()
        time.sleep(0.2)
        with pytest.raises(httpx.TransportError):
            httpx.get(edge.url + "/healthz", timeout=2)
        with pytest.raises(httpx.TransportError):  # cut when the grace is over
            for chunk in it:
                got += chunk
    assert 0.8 < time.monotonic() - t0 < 4
    assert got.count(b"data:") > 10  # the stream went on after EOF
    assert edge.proc.wait(10) == 0
    (rec,) = edge.records(1)  # flushed before exit
    assert rec["abandoned"]
