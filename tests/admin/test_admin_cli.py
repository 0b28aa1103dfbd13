"""``keyguard admin-token create|list|revoke`` as a user runs it, and the token it prints
working against a gateway started over the same vault."""

from __future__ import annotations

import json
import os
import sqlite3
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
