"""Pure parts of the gateway: client IP resolution, throttle, paths, headers, body sniffing."""

from __future__ import annotations

import contextlib
import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.gateway.bodysniff import (
    AmbiguousModel,
    MultipartScanner,
    model_from_json,
    multipart_boundary,
)
from keyguard.gateway.clientip import BadForwarding, ClientIpResolver, normalise_ip
from keyguard.gateway.headers import bearer_token, request_head, response_headers
from keyguard.gateway.paths import BadPath, check_path, split_target, upstream_target
from keyguard.gateway.throttle import FailedAuthThrottle

ips_v4 = st.ip_addresses(v=4)
ips = st.ip_addresses()


@given(ips_v4)
def test_mapped_ipv6_normalised(ip: ipaddress.IPv4Address) -> None:
    assert normalise_ip(f"::ffff:{ip}") == ip
    assert normalise_ip(f"{ip}:8080") == ip


@given(ips, st.lists(ips, max_size=5))
def test_untrusted_peer_ignores_headers(peer: object, chain: list[object]) -> None:
    r = ClientIpResolver(["10.0.0.0/8"])
    peer_ip = normalise_ip(str(peer))
    if r.is_trusted(peer_ip):
        return
    xff = ", ".join(str(c) for c in chain).encode()
    assert r.resolve(str(peer), [(b"x-forwarded-for", xff)]) == peer_ip


@given(ips_v4, st.lists(st.ip_addresses(v=4, network="10.0.0.0/8"), max_size=4))
def test_trusted_hops_skipped(
    client: ipaddress.IPv4Address, hops: list[ipaddress.IPv4Address]
) -> None:
    r = ClientIpResolver(["10.0.0.0/8", "127.0.0.1"])
    if r.is_trusted(client):
        return
    chain = ", ".join(str(x) for x in [client, *hops]).encode()
    assert r.resolve("127.0.0.1", [(b"x-forwarded-for", chain)]) == client


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_forwarding_parser_never_crashes(value: bytes) -> None:
    r = ClientIpResolver(["127.0.0.1"])
    for name in (b"x-forwarded-for", b"forwarded"):
        with contextlib.suppress(BadForwarding):
            r.resolve("127.0.0.1", [(name, value)])


def test_throttle_per_source_and_refill() -> None:
    t = FailedAuthThrottle(burst=2, rate=1.0)
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    t.failure(a, 0.0)
    t.failure(a, 0.0)
    assert t.retry_after(a, 0.0) == pytest.approx(1.0)
    assert t.retry_after(b, 0.0) == 0.0
    assert t.retry_after(a, 1.0) == 0.0
    # IPv6 sources are throttled per /64
    v6a, v6b = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::ffff")
    t.failure(v6a, 0.0)
    t.failure(v6b, 0.0)
    assert t.retry_after(v6a, 0.0) > 0


@given(st.text(alphabet="/.%2eEfF5cC0a", max_size=30))
def test_checked_paths_have_no_dot_segments(path: str) -> None:
    try:
        checked = check_path(("/v1/" + path).encode())
    except BadPath:
        return
    segments = checked.split("/")[1:]
    assert ".." not in segments and "." not in segments and "" not in segments[:-1]
    assert "%2e" not in checked.lower() and "%2f" not in checked.lower()


def test_upstream_target_is_under_base_path() -> None:
    path, query = split_target(b"/v1/files/file-1/content?x=1")
    assert upstream_target("/openai/v1", check_path(path), query) == (
        b"/openai/v1/files/file-1/content?x=1"
    )


def test_headers_swap() -> None:
    head = request_head(
        "POST",
        b"/v1/x",
        b"api.example",
        [
            (b"host", b"evil"),
            (b"authorization", b"Bearer kg_x"),
            (b"api-key", b"k"),
            (b"openai-organization", b"org-client"),
            (b"connection", b"keep-alive, x-secret"),
            (b"x-secret", b"1"),
            (b"te", b"trailers"),
            (b"accept", b"*/*"),
        ],
        b"authorization: Bearer UP\r\n",
        b"content-length: 0\r\n",
    )
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\nhost: api.example\r\n")
    for dropped in (b"kg_x", b"evil", b"api-key", b"org-client", b"x-secret", b"te:"):
        assert dropped not in head
    assert b"accept: */*\r\n" in head and head.endswith(b"content-length: 0\r\n\r\n")
    assert response_headers([(b"transfer-encoding", b"chunked"), (b"x-a", b"1")]) == [
        (b"x-a", b"1")
    ]
    assert bearer_token([(b"authorization", b"bearer abc")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None


def test_model_from_json() -> None:
    assert model_from_json(b'{"model": "gpt-4o", "x": {"model": "y"}}') == (True, "gpt-4o")
    assert model_from_json(b"[1]") == (True, None)
    assert model_from_json(b"nope") == (False, None)
    with pytest.raises(AmbiguousModel):
        model_from_json(b'{"model": "a", "model": "b"}')
    with pytest.raises(AmbiguousModel):
        model_from_json(b'{"model": "a", "mod\\u0065l": "b"}')
    # only UTF-8 is JSON: in UTF-16/32 (which json.loads would guess) or behind a BOM the
    # duplicate check cannot see "model", so such a body is not accepted as JSON at all
    two = '{"model": "gpt-4o-mini", "model": "o1-pro"}'
    for enc in ("utf-16", "utf-16-le", "utf-32", "utf-8-sig"):
        assert model_from_json(two.encode(enc)) == (False, None)
    assert model_from_json('{"model": "gpt-4o-mini", "x": "ünï"}'.encode()) == (True, "gpt-4o-mini")


def _form(fields: list[tuple[str, bytes, bool]]) -> bytes:
    out = b""
    for name, value, is_file in fields:
        fn = b'; filename="f.bin"' if is_file else b""
        out += (
            b'--BND\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"'
            + fn
            + b"\r\n\r\n"
            + value
            + b"\r\n"
        )
    return out + b"--BND--\r\n"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["model", "purpose", "file"]),
            st.binary(max_size=50).filter(lambda b: b"--BND" not in b and b"\r" not in b),
            st.booleans(),
        ),
        max_size=5,
    ),
    st.integers(min_value=1, max_value=40),
)
def test_multipart_scanner_finds_models_in_any_chunking(
    fields: list[tuple[str, bytes, bool]], step: int
) -> None:
    body = _form(fields)
    expected = [v.decode("utf-8", "replace") for n, v, f in fields if n == "model" and not f]
    scanner = MultipartScanner(b"BND")
    try:
        for i in range(0, len(body), step):
            scanner.feed(body[i : i + step])
    except AmbiguousModel:
        return  # a model value that is not UTF-8
    assert scanner.models == expected
    assert scanner.finished
    assert multipart_boundary(b'multipart/form-data; boundary="BND"') == b"BND"
    json.dumps(scanner.models)


def test_accept_encoding_is_cut_to_what_keyguard_can_read() -> None:
    from keyguard.gateway.headers import readable_encodings

    assert readable_encodings(b"gzip, deflate") == b"gzip, deflate"
    assert readable_encodings(b"gzip, deflate, br, zstd") == b"gzip, deflate"
    assert readable_encodings(b"br") == b"identity"
    assert readable_encodings(b"zstd;q=1.0, br;q=0.9") == b"identity"
    assert readable_encodings(b"GZIP;q=0.5, br") == b"GZIP;q=0.5"
    assert readable_encodings(b"*") == b"gzip, deflate"
    assert readable_encodings(b"gzip, *") == b"gzip, deflate"
    head = request_head("GET", b"/v1/x", b"h", [(b"accept-encoding", b"br, gzip")], b"", b"")
    assert b"accept-encoding: gzip\r\n" in head
