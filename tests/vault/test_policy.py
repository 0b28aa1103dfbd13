"""The pure access policy: models, endpoints, CIDRs, expiry, revocation; ``now`` passed in."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.domain.policy import check_request, compile_policy, normalise_ip
from keyguard.domain.records import KeySpec, VirtualKey
from keyguard.errors import ConfigError, Forbidden, Unauthenticated

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
IP = ipaddress.ip_address


def key(**kw: Any) -> VirtualKey:
    return VirtualKey(key_id="k1k1k1k1k1k1", name="app", upstream="prod", created_at=NOW, **kw)


def check(
    k: VirtualKey,
    *,
    ip: str = "10.0.0.1",
    path: str = "/v1/chat/completions",
    model: str | None = "gpt-4o",
    now: datetime = NOW,
) -> None:
    check_request(k, now=now, client_ip=IP(ip), path=path, model=model)


def test_empty_allowlists_allow_everything() -> None:
    check(key(), ip="2001:db8::1", path="/v1/anything", model="whatever")


def test_models_exact_and_globs() -> None:
    k = key(allowed_models=("gpt-4o", "o1-*", "text-embedding-3-[sl]*"))
    for ok in ("gpt-4o", "o1-mini", "o1-", "text-embedding-3-small", "text-embedding-3-large"):
        check(k, model=ok)
    for bad in ("gpt-4o-mini", "GPT-4O", "o1", "text-embedding-3-medium", "xgpt-4o"):
        with pytest.raises(Forbidden) as info:
            check(k, model=bad)
        assert str(info.value) == f"model {bad!r} is not allowed for key k1k1k1k1k1k1"
        assert info.value.code == "model_not_allowed"
    check(k, model=None)  # no model named: the endpoint allowlist governs


def test_endpoints_exact_and_globs() -> None:
    k = key(allowed_endpoints=("/v1/chat/completions", "/v1/files*"))
    for ok in ("/v1/chat/completions", "/v1/files", "/v1/files/file-abc/content"):
        check(k, path=ok)
    for bad in ("/v1/embeddings", "/v1/chat/completions/x", "/v2/files", "v1/files"):
        with pytest.raises(Forbidden, match="endpoint .* is not allowed for key k1k1k1k1k1k1"):
            check(k, path=bad)


@pytest.mark.parametrize(
    "path", ["/v1/files/../embeddings", "/v1/files/./x", "/v1/files//x", "/v1/files/.."]
)
def test_dot_segments_cannot_escape_an_endpoint_glob(path: str) -> None:
    with pytest.raises(Forbidden):
        check(key(allowed_endpoints=("/v1/files*",)), path=path)


def test_cidrs_v4_v6_and_mapped() -> None:
    k = key(allowed_cidrs=("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"))
    for ok in ("10.1.2.3", "192.168.1.7", "2001:db8::42", "::ffff:10.9.9.9", "::ffff:192.168.1.7"):
        check(k, ip=ok)
    for bad in ("11.0.0.1", "192.168.1.8", "2001:db9::1", "::ffff:11.0.0.1", "::1", "127.0.0.1"):
        with pytest.raises(Forbidden, match="client address .* is not allowed") as info:
            check(k, ip=bad)
        assert info.value.code == "ip_not_allowed"


def test_mapped_network_in_allowlist_matches_plain_ipv4_client() -> None:
    k = key(allowed_cidrs=("::ffff:10.0.0.0/104",))
    check(k, ip="10.2.3.4")
    check(k, ip="::ffff:10.2.3.4")
    with pytest.raises(Forbidden):
        check(k, ip="11.2.3.4")


def test_message_shows_normalised_address() -> None:
    with pytest.raises(Forbidden, match=r"client address 8\.8\.8\.8 "):
        check(key(allowed_cidrs=("10.0.0.0/8",)), ip="::ffff:8.8.8.8")


def test_expiry_uses_now_passed_in() -> None:
    k = key(expires_at=NOW + timedelta(hours=1))
    check(k, now=NOW + timedelta(minutes=59, seconds=59))
    with pytest.raises(Unauthenticated, match="^API key expired$"):
        check(k, now=NOW + timedelta(hours=1))


def test_revoked_wins_and_says_so() -> None:
    k = key(revoked_at=NOW - timedelta(days=1), expires_at=NOW - timedelta(days=2))
    with pytest.raises(Unauthenticated, match="^API key revoked$"):
        check(k)


def test_state_is_checked_before_ip() -> None:
    k = key(revoked_at=NOW, allowed_cidrs=("10.0.0.0/8",))
    with pytest.raises(Unauthenticated):
        check(k, ip="8.8.8.8")


def test_policy_is_compiled_once_per_record() -> None:
    k = key(allowed_models=("gpt-*",))
    assert k.policy is k.policy


@pytest.mark.parametrize(
    "field,value",
    [
        ("allowed_cidrs", "10.0.0.0/33"),
        ("allowed_cidrs", "nonsense"),
        ("allowed_models", ""),
        ("allowed_endpoints", "/v1/with space"),
    ],
)
def test_bad_allowlist_entries_are_config_errors(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field):
        KeySpec(name="app", upstream="prod", **{field: (value,)})


def test_keyspec_validation() -> None:
    spec = KeySpec(name="app", upstream="prod", allowed_models="gpt-4o")  # type: ignore[arg-type]
    assert spec.allowed_models == ("gpt-4o",)  # a lone string is not split into characters
    for kw in (
        {"rpm": 0},
        {"tpm": -1},
        {"budget_usd": -1.0},
        {"name": ""},
        {"name": "a b"},
        {"expires_at": datetime(2030, 1, 1)},
        {"max_age": timedelta(0)},
    ):
        with pytest.raises(ConfigError):
            KeySpec(**{"name": "app", "upstream": "prod", **kw})  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses())
def test_ip_checks_never_crash_and_match_ipaddress(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    policy = compile_policy((), (), ("10.0.0.0/8", "fd00::/8"))
    expected = any(
        normalise_ip(ip) in ipaddress.ip_network(n)
        for n in ("10.0.0.0/8", "fd00::/8")
        if ipaddress.ip_network(n).version == normalise_ip(ip).version
    )
    assert policy.allows_ip(ip) is expected
