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


def test_project_fake_upstream_over_verified_tls(rng):
    """The shared fake OpenAI (tests/fakes) over HTTPS with a test CA: active vs revoked."""
    from fakes.openai_upstream import FakeOpenAI as SharedFake

    ca = trustme.CA()
    live, dead = openai_key(rng), openai_key(rng, "svcacct")
    with SharedFake(ca, accepted_keys=[live]) as up:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        verifier = Verifier(up.base_url, ssl_context=trusting, timeout=5)
        assert verifier.status(Secret(live, register=False)) == ACTIVE
        assert verifier.status(Secret(dead, register=False)) == REVOKED
        # without the test CA in the trust store the TLS handshake fails: nothing is sent
        untrusting = Verifier(up.base_url, ssl_context=ssl.create_default_context(), timeout=5)
        assert untrusting.status(Secret(live, register=False)).startswith("unknown (unreachable")
        assert [r["path"] for r in up.requests] == ["/v1/models", "/v1/models"]


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
