"""``keyguard admin-token create|list|revoke`` as a user runs it, and the token it prints
working against a gateway started over the same vault."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from keyguard.cli.main import cli
from keyguard.config import load_settings
from keyguard.domain.admin_tokens import is_admin_token
from keyguard.gateway.admin.setup import admin_api
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import run_in_thread
from keyguard.wiring import open_vault


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("KEYGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYGUARD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(*args: str, expect: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, (args, result.output)
    return result


def test_admin_token_cli(home: Path, config: GatewayConfig) -> None:
    run("init")
    created = json.loads(run("admin-token", "create", "ops", "--scope", "admin", "--json").output)
    token = created.pop("token")
    assert is_admin_token(token) and created["scope"] == "admin"
    plain = run("admin-token", "create", "dash").output  # default scope: read
    reader = plain.strip().splitlines()[-1]
    assert is_admin_token(reader)
    listed = json.loads(run("admin-token", "list", "--json").output)
    assert {t["name"]: t["scope"] for t in listed} == {"ops": "admin", "dash": "read"}
    assert token not in json.dumps(listed)
    run("admin-token", "create", "bad", "--scope", "root", expect=2)

    settings = load_settings({})
    vault = open_vault(settings, os.environ, source="test")
    try:
        with (
            run_in_thread(config, vault, admin=admin_api(vault)) as gw,
            httpx.Client(base_url=gw.url) as http,
        ):
            auth = {"Authorization": f"Bearer {reader}"}
            assert http.get("/admin/v1/audit", headers=auth).status_code == 200
            run("admin-token", "revoke", listed[1]["token_id"])
            assert http.get("/admin/v1/audit", headers=auth).status_code == 401
    finally:
        vault.close()
    revoked = json.loads(run("admin-token", "list", "--all", "--json").output)
    assert [t["status"] for t in revoked] == ["active", "revoked"]
    run("admin-token", "revoke", "zzzzzzzzzzzz", expect=4)
    actions = [r.action for r in _audit(settings.db_path)]
    assert actions.count("admin_token.create") == 2 and "admin_token.revoke" in actions
    raw = b"".join(p.read_bytes() for p in home.glob("keyguard.db*"))
    assert token.encode() not in raw and reader.encode() not in raw


class _Rec:
    def __init__(self, action: str) -> None:
        self.action = action


def _audit(db: Path | None) -> list[_Rec]:
    assert db is not None
    with sqlite3.connect(db) as conn:
        return [_Rec(r[0]) for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]


def test_admin_token_expiry_and_last_use_in_the_cli(home: Path, config: GatewayConfig) -> None:
    from datetime import datetime, timedelta, timezone

    run("init")
    before = datetime.now(timezone.utc)
    created = json.loads(
        run(
            "admin-token", "create", "ci", "--scope", "admin", "--expires-in", "30d", "--json"
        ).output
    )
    token = created.pop("token")
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(days=30, seconds=-1) <= expires - before <= timedelta(days=30, seconds=60)
    assert created["last_used_at"] is None and created["status"] == "active"
    plain = run("admin-token", "create", "forever").output
    forever = plain.strip().splitlines()[-1]
    assert is_admin_token(forever) and "expires" not in plain
    soon = datetime.now(timezone.utc) + timedelta(seconds=3)
    short = run("admin-token", "create", "brief", "--expires-at", soon.isoformat()).output
    brief = short.strip().splitlines()[-1]
    assert is_admin_token(brief) and "expires" in short
    # refused: a bad duration, both options, an expiry in the past
    outputs = [
        run("admin-token", "create", "x", "--expires-in", "soon", expect=2).output,
        run("admin-token", "create", "x", "--expires-in", "1d", "--expires-at", "2099-01-01",
            expect=2).output,
        run("admin-token", "create", "x", "--expires-at", "2001-01-01T00:00", expect=2).output,
    ]  # fmt: skip

    vault = open_vault(load_settings({}), os.environ, source="test")
    try:
        with (
            run_in_thread(config, vault, admin=admin_api(vault)) as gw,
            httpx.Client(base_url=gw.url) as http,
        ):
            auth = {"Authorization": f"Bearer {token}"}
            assert http.get("/admin/v1/keys", headers=auth).status_code == 200
            assert http.get("/admin/v1/keys", headers=auth).status_code == 200
            time.sleep(max((soon - datetime.now(timezone.utc)).total_seconds(), 0) + 0.05)
            expired = http.get("/admin/v1/keys", headers={"Authorization": f"Bearer {brief}"})
            assert expired.status_code == 401
            assert expired.json()["error"]["code"] == "expired_admin_token"
            outputs.append(expired.text)
    finally:
        vault.close()

    listed = run("admin-token", "list").output
    outputs.append(listed)
    header, *rows = listed.strip().splitlines()
    assert header.split() == [
        "ID", "NAME", "SCOPE", "STATUS", "CREATED", "BY", "EXPIRES", "LAST", "USED"
    ]  # fmt: skip
    by_name = {r.split()[1]: r.split() for r in rows}
    assert set(by_name) == {"ci", "forever"}  # the expired one only with --all
    assert by_name["ci"][6] == created["expires_at"]
    # recorded by the gateway (views show whole seconds)
    assert datetime.fromisoformat(by_name["ci"][7]) >= before.replace(microsecond=0)
    assert by_name["forever"][6:] == ["never", "never"]

    full = run("admin-token", "list", "--all", "--json").output
    outputs.append(full)
    data = {t["name"]: t for t in json.loads(full)}
    assert data["brief"]["status"] == "expired" and data["brief"]["last_used_at"] is None
    assert data["ci"]["last_used_at"] == by_name["ci"][7]
    assert data["forever"]["expires_at"] is None
    revoked = run("admin-token", "revoke", data["ci"]["token_id"]).output
    outputs.append(revoked)
    assert "expires_at" in revoked and "last_used_at" in revoked

    # the sentinel: no token in anything printed after its one-time creation answer
    for out in outputs:
        for secret in (token, forever, brief):
            assert secret not in out and secret[4:40] not in out
