"""Every deny path, end to end through the real vault: the client gets OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, request
from keyguard.domain.keys import generate_virtual_key
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.vault import Vault

CHAT = b'{"model": "gpt-4o-mini", "messages": []}'
JSON = {"Content-Type": "application/json"}


def _assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status == status, (r.status, r.body)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    if code is not None:
        assert err["code"] == code
    return err


def test_missing_malformed_unknown_key(gateway: RunningGateway, transcript: Transcript) -> None:
    _assert_error(request(gateway, "GET", "/v1/models", transcript=transcript), 401)
    r = request(gateway, "GET", "/v1/models", token="not-a-key", transcript=transcript)
    _assert_error(r, 401)
    _, token = generate_virtual_key()
    typo = token[:-1] + ("A" if token[-1] != "A" else "B")
    _assert_error(request(gateway, "GET", "/v1/models", token=typo, transcript=transcript), 401)
    err = _assert_error(
        request(gateway, "GET", "/v1/models", token=token, transcript=transcript), 401
    )
    assert token not in err["message"] and token[15:] not in str(err)


def test_expired_and_revoked(
    gateway: RunningGateway, vault: Vault, make_key: Any, transcript: Transcript
) -> None:
    expired = make_key(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    r = request(gateway, "GET", "/v1/models", token=expired, transcript=transcript)
    _assert_error(r, 401, "expired_api_key")
    token = make_key()
    assert request(gateway, "GET", "/v1/models", token=token).status == 200
    key_id = token[3:15]
    vault.revoke_key(key_id)
    r = request(gateway, "GET", "/v1/models", token=token, transcript=transcript)
    _assert_error(r, 401, "revoked_api_key")


def test_model_and_endpoint(gateway: RunningGateway, make_key: Any, transcript: Transcript) -> None:
    token = make_key(allowed_models=["gpt-4o*"], allowed_endpoints=["/v1/chat/completions"])
    ok = request(gateway, "POST", "/v1/chat/completions", token=token, body=CHAT, headers=JSON)
    assert ok.status == 200
    bad = b'{"model": "o1-pro", "messages": []}'
    r = request(
        gateway,
        "POST",
        "/v1/chat/completions",
        token=token,
        body=bad,
        headers=JSON,
        transcript=transcript,
    )
    _assert_error(r, 403, "model_not_allowed")
    r = request(gateway, "GET", "/v1/models", token=token, transcript=transcript)
    _assert_error(r, 403, "endpoint_not_allowed")


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "gpt-4o-mini", "model": "o1-pro"}',  # duplicate key: parsers disagree
        b'{"model": ["o1-pro"]}',
        b"model=o1-pro",  # not JSON at all
        # UTF-16 (json.loads would guess it): the duplicate-key check could not see "model"
        '{"model": "gpt-4o-mini", "model": "o1-pro"}'.encode("utf-16"),
        '{"model": "o1-pro"}'.encode("utf-8-sig"),
    ],
)
def test_model_smuggling_refused(gateway: RunningGateway, make_key: Any, body: bytes) -> None:
    token = make_key(allowed_models=["gpt-4o*"])
    r = request(gateway, "POST", "/v1/chat/completions", token=token, body=body, headers=JSON)
    _assert_error(r, 400)


def test_model_in_multipart(gateway: RunningGateway, make_key: Any) -> None:
    token = make_key(allowed_models=["whisper-1"])

    def form(*fields: tuple[str, bytes, str | None]) -> tuple[bytes, dict[str, str]]:
        parts = b""
        for name, value, filename in fields:
            fn = f'; filename="{filename}"' if filename else ""
            parts += (
                f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{fn}\r\n\r\n'.encode()
                + value
                + b"\r\n"
            )
        return parts + b"--XyZ--\r\n", {"Content-Type": "multipart/form-data; boundary=XyZ"}

    body, h = form(("model", b"gpt-4o-transcribe", None), ("file", b"x" * 10, "a.wav"))
    r = request(gateway, "POST", "/v1/files", token=token, body=body, headers=h)
    _assert_error(r, 403, "model_not_allowed")
    body, h = form(("model", b"whisper-1", None), ("file", b"x" * 10, "a.wav"))
    assert request(gateway, "POST", "/v1/files", token=token, body=body, headers=h).status == 200
    # a forbidden model after a large file part: caught while streaming, upstream never completes
    body, h = form(("file", b"x" * 200_000, "a.wav"), ("model", b"gpt-4o-transcribe", None))
    r = request(gateway, "POST", "/v1/files", token=token, body=body, headers=h)
    _assert_error(r, 403, "model_not_allowed")
    body, h = form(
        ("model", b"whisper-1", None),
        ("file", b"x" * 200_000, "a.wav"),
        ("model", b"gpt-4o-transcribe", None),
    )
    _assert_error(request(gateway, "POST", "/v1/files", token=token, body=body, headers=h), 400)
    # both model fields in the first read of the body (a small form, or a fast client)
    body, h = form(
        ("model", b"whisper-1", None),
        ("file", b"x" * 10, "a.wav"),
        ("model", b"gpt-4o-transcribe", None),
    )
    _assert_error(request(gateway, "POST", "/v1/files", token=token, body=body, headers=h), 400)


def test_ip_allowlist_v4_and_mapped(
    gateway: RunningGateway, make_key: Any, transcript: Transcript
) -> None:
    token = make_key(allowed_cidrs=["127.0.0.2/32"])
    assert request(gateway, "GET", "/v1/models", token=token, source="127.0.0.2").status == 200
    r = request(
        gateway, "GET", "/v1/models", token=token, source="127.0.0.3", transcript=transcript
    )
    err = _assert_error(r, 403, "ip_not_allowed")
    assert "127.0.0.3" in err["message"]  # normalised from ::ffff:127.0.0.3 (dual-stack socket)


def test_ip_allowlist_v6(gateway: RunningGateway, make_key: Any) -> None:
    token = make_key(allowed_cidrs=["::1/128"])
    assert request(gateway, "GET", "/v1/models", token=token, source="::1").status == 200
    _assert_error(request(gateway, "GET", "/v1/models", token=token, source="127.0.0.1"), 403)


def test_spoofed_forwarding_from_untrusted_peer(gateway: RunningGateway, make_key: Any) -> None:
    token = make_key(allowed_cidrs=["203.0.113.0/24"])
    for h in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}):
        _assert_error(request(gateway, "GET", "/v1/models", token=token, headers=h), 403)


@pytest.fixture(scope="module")
def proxied(
    gateway_config: GatewayConfig, vault: Vault, upstream: FakeOpenAI
) -> Iterator[RunningGateway]:
    from dataclasses import replace

    cfg = replace(gateway_config, trusted_proxies=("127.0.0.5/32", "10.9.0.0/16"))
    with run_in_thread(cfg, vault) as gw:
        yield gw


@pytest.mark.parametrize(
    ("source", "headers", "status"),
    [
        ("127.0.0.5", {"X-Forwarded-For": "203.0.113.7"}, 200),
        ("127.0.0.5", {"X-Forwarded-For": "203.0.113.7, 10.9.1.1"}, 200),  # two trusted hops
        ("127.0.0.5", {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, 403),  # rightmost wins
        ("127.0.0.5", {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}, 200),  # left is spoofable
        ("127.0.0.5", {"Forwarded": 'for="[2001:db8::1]:443", for=203.0.113.7'}, 200),
        ("127.0.0.5", {"X-Forwarded-For": "::ffff:203.0.113.7"}, 200),
        ("127.0.0.6", {"X-Forwarded-For": "203.0.113.7"}, 403),  # peer not trusted
        ("127.0.0.5", {}, 403),  # the proxy itself is not allowed
        ("127.0.0.5", {"X-Forwarded-For": "garbage"}, 400),
        ("127.0.0.5", {"X-Forwarded-For": "203.0.113.7", "Forwarded": "for=198.51.100.1"}, 400),
    ],
)
def test_trusted_proxy_chains(
    proxied: RunningGateway, make_key: Any, source: str, headers: dict[str, str], status: int
) -> None:
    token = make_key(allowed_cidrs=["203.0.113.0/24"])
    r = request(proxied, "GET", "/v1/models", token=token, source=source, headers=headers)
    assert r.status == status, r.body


def test_failed_auth_throttle_per_source(
    gateway_config: GatewayConfig, vault: Vault, make_key: Any, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    from dataclasses import replace

    cfg = replace(gateway_config, throttle_burst=3, throttle_rate=0.01)
    good = make_key()
    _, unknown = generate_virtual_key()
    with run_in_thread(cfg, vault) as gw:
        statuses = [
            request(gw, "GET", "/v1/models", token=unknown, source="127.0.0.9").status
            for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        r = request(gw, "GET", "/v1/models", token=good, source="127.0.0.9")
        assert r.status == 429 and int(r.headers[b"retry-after"]) >= 1
        # other sources are unaffected
        assert request(gw, "GET", "/v1/models", token=good, source="127.0.0.10").status == 200


def test_audit_records_requests(gateway: RunningGateway, vault: Vault, make_key: Any) -> None:
    token = make_key()
    request(
        gateway,
        "POST",
        "/v1/chat/completions",
        token=token,
        body=CHAT,
        headers=JSON,
        source="127.0.0.4",
    )
    gateway.flush_audit()
    records = [r for r in vault.audit.list() if r.actor == f"key:{token[3:15]}"]
    assert records, "no audit record for the request"
    rec = records[-1]
    assert rec.action == "gateway.request" and rec.source == "127.0.0.4"
    assert rec.details["status"] == 200 and rec.details["model"] == "gpt-4o-mini"
    assert rec.details["upstream"] == "default" and rec.details["upstream_version"] == 1
    assert vault.audit.verify().ok


def test_keep_alive_auth_reuse_sees_revocation_and_other_tokens(
    gateway: RunningGateway, vault: Vault, make_key: Any
) -> None:
    import time

    from fakes.rawhttp import connect, read_responses

    token = make_key()
    _, unknown = generate_virtual_key()

    def get(s: Any, tok: str) -> int:
        s.sendall(
            f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()
        )
        return read_responses(s, 1)[0].status

    with connect(gateway) as s:
        assert get(s, token) == 200
        assert get(s, unknown) == 401  # a different token on the same connection: full check
        assert get(s, token) == 200
        vault.revoke_key(token[3:15])
        time.sleep(0.3)  # > auth_cache_ttl
        assert get(s, token) == 401
