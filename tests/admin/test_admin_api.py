"""The admin API end to end: a real gateway, a real SQLite vault, httpx as the client."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from admin.conftest import Client
from fakes.openai_upstream import FakeOpenAI
from keyguard.domain.admin_tokens import generate_admin_token
from keyguard.domain.keys import generate_openai_style_key, is_virtual_key
from keyguard.gateway.server import RunningGateway
from keyguard.vault import Vault

KEYS = "/admin/v1/keys"


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a response, after checking its status."""
    assert r.status_code == status, (r.status_code, r.text)
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    return err


def audit_actions(vault: Vault, after: int = 0) -> list[Any]:
    return vault.audit.list(after_seq=after)


def head_seq(vault: Vault) -> int:
    records = vault.audit.list()
    return records[-1].seq if records else 0


def proxied_status(client: Client, token: str) -> int:
    return client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code


def test_missing_malformed_and_unknown_tokens_are_401_and_audited(
    client: Client, vault: Vault
) -> None:
    start = head_seq(vault)
    err = error_of(client.get(KEYS), 401)
    assert err["code"] == "missing_admin_token"
    assert client.get(KEYS).headers["www-authenticate"].startswith("Bearer")
    assert error_of(client.get(KEYS, "kga_not-a-token"), 401)["code"] == "invalid_admin_token"
    token_id, unknown = generate_admin_token()  # well-formed, never stored
    assert error_of(client.get(KEYS, unknown), 401)["code"] == "invalid_admin_token"
    # a virtual key is not an admin token
    assert error_of(client.get(KEYS, "kg_" + unknown[4:-1]), 401)["code"] == "invalid_admin_token"
    denied = [r for r in audit_actions(vault, start) if r.action == "admin.auth"]
    assert len(denied) == 5 and all(r.outcome == "denied" for r in denied)
    assert f"admin-token:{token_id}" in [r.actor for r in denied]


def test_read_token_reads_but_cannot_mutate(client: Client, reader: str, vault: Vault) -> None:
    assert client.get(KEYS, reader).status_code == 200
    assert client.get("/admin/v1/upstreams", reader).status_code == 200
    assert client.get("/admin/v1/audit", reader).status_code == 200
    start = head_seq(vault)
    for path, body in [
        (KEYS, {"name": "nope"}),
        (f"{KEYS}/abcdefghijkl/revoke", {}),
        (f"{KEYS}/abcdefghijkl/rotate", {}),
        ("/admin/v1/upstreams/default/rotate", {"mode": "admin"}),
    ]:
        assert error_of(client.post(path, reader, json=body), 403)["code"] == "insufficient_scope"
    refused = [r for r in audit_actions(vault, start) if r.action == "admin.request"]
    assert [r.outcome for r in refused] == ["denied"] * 4
    assert not [r for r in audit_actions(vault, start) if r.action == "key.create"]


def test_key_lifecycle(client: Client, admin: str, reader: str, vault: Vault) -> None:
    start = head_seq(vault)
    r = client.post(
        KEYS, admin, json={"name": "app-1", "owner": "team-a", "rpm": 100, "expires_in_s": 3600,
                           "allowed_models": ["gpt-4o*"], "max_age_s": 86400 * 30},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    created = r.json()
    first = created.pop("key")
    assert is_virtual_key(first)
    key_id = created["key_id"]
    assert created["status"] == "active" and created["rpm"] == 100
    assert created["max_age"] == "30d" and created["expires_at"]
    assert r.headers["cache-control"] == "no-store"
    assert proxied_status(client, first) == 200

    shown = client.get(f"{KEYS}/{key_id}", reader).json()
    assert "key" not in shown and shown["name"] == "app-1"
    assert key_id in [k["key_id"] for k in client.get(KEYS, reader).json()["data"]]

    usage = client.get(f"{KEYS}/{key_id}/usage", reader)
    assert usage.status_code == 200, usage.text
    assert usage.json()["key_id"] == key_id and usage.json()["rpm"] == 100

    r = client.post(f"{KEYS}/{key_id}/rotate", admin, json={"grace_s": 0})
    assert r.status_code == 200, r.text
    second = r.json()["key"]
    assert is_virtual_key(second) and second != first and r.json()["key_id"] == key_id
    deadline = time.monotonic() + 5
    while proxied_status(client, first) != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxied_status(client, first) == 401
    assert proxied_status(client, second) == 200

    r = client.post(f"{KEYS}/{key_id}/revoke", admin, json={"reason": "test over"})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert proxied_status(client, second) == 401
    assert key_id not in [k["key_id"] for k in client.get(KEYS, reader).json()["data"]]
    assert key_id in [k["key_id"] for k in client.get(f"{KEYS}?all=true", reader).json()["data"]]
    # a revoked key cannot be rotated
    assert error_of(client.post(f"{KEYS}/{key_id}/rotate", admin, json={}), 409)

    records = audit_actions(vault, start)
    actions = [r.action for r in records]
    for action in ("key.create", "key.rotate", "key.revoke"):
        assert action in actions
    api = [r for r in records if r.action == "admin.request"]
    assert [(r.details["operation"], r.outcome) for r in api] == [
        ("createKey", "ok"), ("rotateKey", "ok"), ("revokeKey", "ok"), ("rotateKey", "denied"),
    ]  # fmt: skip
    assert all(r.actor.startswith("admin-token:") and r.source == "127.0.0.1" for r in api)


def test_create_key_validation(client: Client, admin: str) -> None:
    assert error_of(client.post(KEYS, admin, json={}), 400)["param"] == "name"
    assert error_of(client.post(KEYS, admin, json={"name": "a", "rpm": "5"}), 400)["param"] == "rpm"
    assert error_of(client.post(KEYS, admin, json={"name": "a", "rpm": 0}), 400)["param"] == "rpm"
    assert error_of(client.post(KEYS, admin, json={"name": "a", "bogus": 1}), 400)
    assert error_of(client.post(KEYS, admin, json={"name": "a", "upstream": "nope"}), 404)
    assert error_of(client.post(KEYS, admin, json={"name": "a", "allowed_cidrs": ["x"]}), 400)
    err = error_of(client.post(KEYS, admin, content=b"{not json", headers={}), 400)
    assert err["code"] == "invalid_json"
    deep = b"[" * 5_000 + b"]" * 5_000  # RecursionError in the parser: a 400, not a 500
    assert (
        error_of(client.post(KEYS, admin, content=deep, headers={}), 400)["code"] == "invalid_json"
    )
    assert error_of(client.post(KEYS, admin, json=["name"]), 400)
    past = {"name": "a", "expires_at": "2001-01-01T00:00:00Z"}
    assert error_of(client.post(KEYS, admin, json=past), 400)


def test_unknown_routes_and_methods(client: Client, admin: str) -> None:
    assert error_of(client.get("/admin/v1/nothing", admin), 404)
    assert error_of(client.get(f"{KEYS}/NOT-AN-ID", admin), 404)
    assert error_of(client.get(f"{KEYS}/abcdefghijkl", admin), 404)["code"] == "not_found"
    r = client.request("DELETE", KEYS, admin)
    assert error_of(r, 405) and r.headers["allow"] == "GET, POST"
    assert error_of(client.get("/admin/v1/audit?limit=0", admin), 400)
    assert error_of(client.get("/admin/v1/audit?after=x", admin), 400)


def test_upstreams_list_and_manual_rotation(
    client: Client, admin: str, reader: str, upstream: FakeOpenAI, vault: Vault
) -> None:
    listed = client.get("/admin/v1/upstreams", reader).json()["data"]
    default = next(u for u in listed if u["name"] == "default")
    assert default["versions"][0]["fingerprint"].startswith("sha256:")
    path = "/admin/v1/upstreams/default/rotate"
    assert error_of(client.post(path, admin, json={"mode": "manual"}), 400)
    assert error_of(client.post(path, admin, json={"mode": "admin"}), 404)  # no admin key
    assert error_of(client.post("/admin/v1/upstreams/nope/rotate", admin,
                                json={"mode": "manual", "new_key": "x" * 40}), 404)  # fmt: skip
    new_key = generate_openai_style_key("proj")
    upstream.accepted_keys.append(new_key)
    start = head_seq(vault)
    r = client.post(path, admin, json={"mode": "manual", "new_key": new_key})
    assert r.status_code == 200, r.text
    body = r.json()
    assert new_key not in r.text and body["mode"] == "manual" and body["tested"] is True
    assert body["new_version"] == body["old_version"] + 1
    versions = client.get("/admin/v1/upstreams", reader).json()["data"][0]["versions"]
    assert [v["label"] for v in versions][-2:] == ["PREVIOUS", "CURRENT"]
    actions = [r.action for r in audit_actions(vault, start)]
    assert "upstream.rotate.manual" in actions and "admin.request" in actions
    assert all(new_key not in repr(r) for r in vault.audit.list())


def test_audit_paging_and_verify(client: Client, reader: str) -> None:
    first = client.get("/admin/v1/audit?limit=2", reader).json()
    assert len(first["data"]) == 2 and first["has_more"] is True
    after = first["next_after"]
    assert after == first["data"][-1]["seq"]
    second = client.get(f"/admin/v1/audit?after={after}&limit=3", reader).json()
    assert [r["seq"] for r in second["data"]] == [after + 1, after + 2, after + 3]
    verified = client.get("/admin/v1/audit/verify", reader).json()
    assert verified["ok"] is True and verified["records"] >= 5 and verified["problems"] == []


def test_revoked_admin_token_is_401(client: Client, vault: Vault) -> None:
    record, secret = vault.create_admin_token("short-lived", "admin", actor="user:tester")
    token = secret.reveal()
    assert client.get(KEYS, token).status_code == 200
    vault.revoke_admin_token(record.token_id, actor="user:tester")
    assert error_of(client.get(KEYS, token), 401)["code"] == "revoked_admin_token"


def test_expired_admin_token_is_401_like_a_revoked_one(client: Client, vault: Vault) -> None:
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    record, secret = vault.create_admin_token("brief", "admin", expires_at=until)
    token = secret.reveal()
    time.sleep(max((until - datetime.now(timezone.utc)).total_seconds(), 0) + 0.05)
    missing = error_of(client.get(KEYS), 401)
    start = head_seq(vault)
    r = client.get(KEYS, token)
    err = error_of(r, 401)  # the same shape as every other refusal
    assert err == {
        "message": "admin token expired",
        "type": missing["type"],
        "code": "expired_admin_token",
        "param": None,
    }
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert token not in r.text and record.token_id not in r.text
    denied = [r for r in audit_actions(vault, start) if r.action == "admin.auth"]
    assert [(d.actor, d.details["reason"]) for d in denied] == [
        (f"admin-token:{record.token_id}", "expired_admin_token")
    ]
    assert vault.list_admin_tokens()[-1].last_used_at is None  # a refusal is not a use
    # a mutating call is refused the same way, before its body is looked at
    error_of(client.post(KEYS, token, json={"name": "x"}), 401)


def test_token_with_future_expiry_works_and_last_use_is_written_once_a_minute(
    client: Client, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    until = datetime.now(timezone.utc) + timedelta(days=30)
    record, secret = vault.create_admin_token("dash", "read", expires_at=until)
    token = secret.reveal()
    writes: list[str] = []
    touch = vault.store.touch_admin_token

    def counting(token_id: str, at: datetime, *, unless_after: datetime) -> bool:
        writes.append(token_id)
        return touch(token_id, at, unless_after=unless_after)

    monkeypatch.setattr(vault.store, "touch_admin_token", counting)
    before = datetime.now(timezone.utc)
    assert client.get(KEYS, token).status_code == 200
    first = next(t for t in vault.list_admin_tokens() if t.token_id == record.token_id)
    assert first.last_used_at is not None and first.last_used_at >= before
    for _ in range(5):
        assert client.get(KEYS, token).status_code == 200
    again = next(t for t in vault.list_admin_tokens() if t.token_id == record.token_id)
    assert again.last_used_at == first.last_used_at  # not rewritten within the minute
    assert writes == [record.token_id]  # one write for six authenticated requests


def test_admin_requests_are_served_while_the_proxy_streams(
    client: Client, gateway: RunningGateway, reader: str
) -> None:
    """Many admin calls at once complete (vault calls run off the loop) and the proxy answers
    in between."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(client.get, "/admin/v1/audit/verify", reader) for _ in range(8)]
        assert client.get("/healthz").status_code == 200
        assert all(f.result().status_code == 200 for f in calls)
