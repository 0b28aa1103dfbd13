"""The Admin API client against the fake platform: shapes, pagination, errors as UpstreamError,
verified TLS, no redirects, timeouts; and the domain's retire rule and record round trip."""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.domain.rotation import RotationState, UpstreamRotation, retire_decision
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, UpstreamTimeout, UpstreamUnavailable
from keyguard.rotation.admin_api import AdminApi, AdminApiError, Endpoint, check_key, tls_context
from rotation.conftest import PROJECT

T = datetime(2031, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def endpoint(platform: FakeOpenAIPlatform, ssl_ctx: ssl.SSLContext) -> Endpoint:
    return Endpoint(platform.base_url, ssl_context=ssl_ctx, timeout=5.0)


@pytest.fixture
def api(platform: FakeOpenAIPlatform, endpoint: Endpoint) -> AdminApi:
    return AdminApi(endpoint, Secret(platform.new_admin_key()), PROJECT)


def test_service_account_lifecycle(api: AdminApi, platform: FakeOpenAIPlatform,
                                   endpoint: Endpoint) -> None:
    created = api.create_service_account("keyguard-test")
    assert created.account.id.startswith("svc_acct_") and created.api_key_id.startswith("key_")
    assert "sk-" not in repr(created)  # the key never prints
    check_key(endpoint, created.api_key)
    keys = {k.id: k for k in api.list_api_keys()}
    listed = keys[created.api_key_id]
    assert listed.owner_type == "service_account" and listed.owner_id == created.account.id
    assert listed.last_used_at is not None  # the test call used it
    assert created.api_key.reveal() not in listed.redacted_value
    assert [a.name for a in api.list_service_accounts()] == ["keyguard-test"]
    assert api.delete_service_account(created.account.id)
    assert not api.delete_service_account(created.account.id)  # already gone: idempotent
    with pytest.raises(AdminApiError) as err:
        check_key(endpoint, created.api_key)
    assert err.value.http_status == 401 and err.value.code == "invalid_api_key"


def test_pagination(api: AdminApi, platform: FakeOpenAIPlatform) -> None:
    for i in range(130):
        platform.add_service_account(f"sa-{i}")
    assert len(api.list_service_accounts()) == 130
    assert len(api.list_api_keys()) == 130
    pages = [c for c in platform.admin_calls if c[1].endswith("/service_accounts")]
    assert len(pages) == 2


def test_errors_never_echo_keys(platform: FakeOpenAIPlatform, endpoint: Endpoint) -> None:
    project_key = platform.add_service_account("x").key.value
    for key, status in ((Secret(project_key), 403), (Secret("sk-admin-" + "x" * 40), 401)):
        with pytest.raises(AdminApiError) as err:
            AdminApi(endpoint, key, PROJECT).list_service_accounts()
        assert err.value.http_status == status
        assert key.reveal() not in str(err.value)
    with pytest.raises(AdminApiError) as err:
        AdminApi(endpoint, Secret(platform.new_admin_key()), "proj_none").list_api_keys()
    assert err.value.http_status == 404 and isinstance(err.value, UpstreamUnavailable)


def test_tls_is_verified_and_redirects_not_followed(
    platform: FakeOpenAIPlatform, endpoint: Endpoint
) -> None:
    key = Secret(platform.add_service_account("x").key.value)
    untrusted = Endpoint(platform.base_url, ssl_context=tls_context(None), timeout=5.0)
    with pytest.raises(UpstreamUnavailable, match="TLS"):
        check_key(untrusted, key)
    before = len(platform.requests)
    with pytest.raises(AdminApiError) as err:
        endpoint.expect("GET", "/test/redirect", key)
    assert err.value.http_status == 302 and len(platform.requests) == before + 1
    with pytest.raises(ConfigError):
        Endpoint("http://example.com/v1")


def test_timeout(platform: FakeOpenAIPlatform, ssl_ctx: ssl.SSLContext) -> None:
    key = Secret(platform.add_service_account("x").key.value)
    slow = Endpoint(platform.base_url, ssl_context=ssl_ctx, timeout=0.3)
    with pytest.raises(UpstreamTimeout):
        slow.expect("GET", "/test/stall", key)


def test_admin_key_endpoints(platform: FakeOpenAIPlatform, endpoint: Endpoint) -> None:
    admin = Secret(platform.new_admin_key())
    made = endpoint.expect("POST", "/organization/admin_api_keys", admin,
                           {"name": "second", "expires_in_seconds": 3600})
    assert made["object"] == "organization.admin_api_key" and made["value"].startswith("sk-admin-")
    assert made["expires_at"] == made["created_at"] + 3600
    gone = endpoint.expect("DELETE", f"/organization/admin_api_keys/{made['id']}", admin)
    assert gone == {"id": made["id"], "object": "organization.admin_api_key.deleted",
                    "deleted": True}
    with pytest.raises(AdminApiError):
        AdminApi(endpoint, Secret(made["value"]), PROJECT).list_service_accounts()


def _rotation(**kw: object) -> UpstreamRotation:
    base = dict(upstream="u", rotation_id="r", state=RotationState.FINISHED, project_id="p",
                account_name="a", started_at=T, updated_at=T, grace=timedelta(hours=1),
                max_grace=timedelta(hours=24), finished_at=T)
    base.update(kw)
    return UpstreamRotation(**base)  # type: ignore[arg-type]


def test_retire_rule() -> None:
    r = _rotation()
    assert not retire_decision(r, None, T + timedelta(minutes=59)).retire
    assert retire_decision(r, None, T + timedelta(hours=1)).retire
    used = T + timedelta(minutes=30)
    first = retire_decision(r, used, T + timedelta(hours=2))
    assert not first.retire and first.observed_last_used == used
    seen = _rotation(old_observed=True, old_last_used=used)
    assert retire_decision(seen, used, T + timedelta(hours=3)).retire
    assert not retire_decision(seen, used + timedelta(minutes=1), T + timedelta(hours=3)).retire
    assert retire_decision(seen, T + timedelta(hours=23), T + timedelta(hours=24)).retire
    assert not retire_decision(_rotation(finished_at=None), None, T).retire
    # a compromised old key does not wait for the grace window, nor for its use to stop
    used_now = T + timedelta(minutes=1)
    hot = retire_decision(r, used_now, T + timedelta(minutes=2), old_compromised=True)
    assert hot.retire and "compromised" in hot.reason
    assert not retire_decision(_rotation(finished_at=None), None, T, old_compromised=True).retire


@given(
    state=st.sampled_from(list(RotationState)),
    grace=st.integers(min_value=0, max_value=10**7),
    version=st.none() | st.integers(min_value=1, max_value=10**6),
    detail=st.text(max_size=50),
    observed=st.booleans(),
)
def test_record_json_roundtrip(state: RotationState, grace: int, version: int | None,
                               detail: str, observed: bool) -> None:
    r = _rotation(state=state, grace=timedelta(seconds=grace), new_version=version,
                  old_version=version, detail=detail, old_observed=observed,
                  old_last_used=T if observed else None)
    assert UpstreamRotation.from_json(r.to_json()) == r
