"""--verify against a fake OpenAI upstream on loopback (plain HTTP and verified TLS)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError
from keyguard.scanner.verify import ACTIVE, REVOKED, Verifier, check_base_url
from scanner.fakeupstream import FakeOpenAI, serve
from scanner.keygen import openai_key


def test_active_and_revoked_over_loopback_http(rng):
    live, dead = openai_key(rng), openai_key(rng)
    FakeOpenAI.live = {live}
    with serve() as base:
        v = Verifier(base + "/v1", timeout=5)
        assert v.status(Secret(live, register=False)) == ACTIVE
        assert v.status(Secret(dead, register=False)) == REVOKED


def test_redirects_are_not_followed(rng):
    FakeOpenAI.live, FakeOpenAI.seen = {openai_key(rng)}, []
    with serve() as base:
        status = Verifier(base + "/redirect", timeout=5).status(Secret(openai_key(rng)))
    assert status == "unknown (HTTP 302)"
    assert FakeOpenAI.seen == ["/redirect/models"]


def test_tls_is_verified(rng):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    key = openai_key(rng)
    FakeOpenAI.live = {key}
    with serve(server_ctx) as base:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        assert Verifier(base + "/v1", ssl_context=trusting).status(Secret(key)) == ACTIVE
        untrusting = ssl.create_default_context()
        status = Verifier(base + "/v1", ssl_context=untrusting, timeout=5).status(Secret(key))
        assert status.startswith("unknown (unreachable")


def test_plain_http_only_for_loopback():
    assert check_base_url("http://localhost:9/v1/") == "http://localhost:9/v1"
    assert check_base_url("http://[::1]:9/v1") == "http://[::1]:9/v1"
    with pytest.raises(ConfigError):
        check_base_url("http://api.openai.com/v1")
    with pytest.raises(ConfigError):
        check_base_url("ftp://127.0.0.1/")


def test_unreachable_upstream_is_unknown(rng):
    with serve() as base:
        pass  # closed again: nothing listens there now
    assert Verifier(base + "/v1", timeout=2).status(Secret(openai_key(rng))).startswith("unknown")
