"""The rotation commands as a user runs them (click's CliRunner on a real vault and the fake
platform): manual rotation, emergency revoke, drift, admin-key setup, key rotate, rotate --due.
No key value may appear in any output."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.cli.main import cli
from keyguard.config import load_settings
from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.records import KeySpec, Label
from keyguard.domain.secret import Secret
from keyguard.rotation.admin_api import AdminApiError, check_key
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from keyguard.wiring import open_vault
from rotation.conftest import PROJECT


class Run:
    def __init__(self, env: dict[str, str], platform: FakeOpenAIPlatform) -> None:
        self.env = env
        self.platform = platform
        self.outputs: list[str] = []

    def __call__(self, *args: str, expect: int = 0, **extra: str) -> Result:
        result = CliRunner().invoke(cli, list(args), env={**self.env, **extra},
                                    catch_exceptions=False)
        self.outputs.append(result.output)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        return result

    def vault(self) -> Vault:
        return open_vault(load_settings({"home": Path(self.env["KEYGUARD_HOME"])}), self.env)

    def check_clean(self) -> None:
        values = list(self.platform.admin_keys) + [
            a.key.value for a in self.platform.projects[PROJECT].values()
        ]
        text = "\n".join(self.outputs)
        assert not [v for v in values if v in text], "a key value reached the CLI output"


@pytest.fixture
def run(home_env: dict[str, str], platform: FakeOpenAIPlatform) -> Any:
    r = Run(home_env, platform)
    yield r
    r.check_clean()


def test_manual_rotation_tests_switches_and_reminds(run: Run, platform: FakeOpenAIPlatform,
                                                    connect: Any) -> None:
    new = platform.add_service_account("made-by-hand").key.value
    out = run("upstream", "rotate", "default", "--from-env", "NEW_KEY", "--json", NEW_KEY=new)
    data = json.loads(out.stdout)
    assert data["new_version"] == 2 and data["old_version"] == 1 and data["tested"]
    assert "revoke the old key" in data["reminder"]
    assert ("GET", "/v1/models") in [(r["method"], r["path"]) for r in platform.requests]
    with _opened(run) as v:
        cred = v.get_upstream("default")
        assert cred.version_with(Label.CURRENT).version == 2  # type: ignore[union-attr]
        assert cred.version_with(Label.PREVIOUS).version == 1  # type: ignore[union-attr]
    # a key the upstream refuses is not stored
    bogus = generate_openai_style_key("proj")
    run("upstream", "rotate", "default", "--from-env", "NEW_KEY", expect=7, NEW_KEY=bogus)
    with _opened(run) as v:
        assert len(v.get_upstream("default").versions) == 2


class _opened:
    def __init__(self, run: Run) -> None:
        self.v = run.vault()

    def __enter__(self) -> Vault:
        return self.v

    def __exit__(self, *exc: object) -> None:
        self.v.close()


def test_emergency_revoke_with_admin_key(run: Run, platform: FakeOpenAIPlatform,
                                         connect: Any) -> None:
    with _opened(run) as v:
        _, leaked = v.upstream_secret("default")
    out = run("upstream", "revoke", "default", "--now", "--yes", "--json")
    data = json.loads(out.stdout)
    assert data == {**data, "revoked_version": 1, "new_version": 2,
                    "service_account_deleted": True}
    with _opened(run) as v:
        cred = v.get_upstream("default")
        assert [(x.version, x.label) for x in cred.versions] == [(1, None), (2, Label.CURRENT)]
        with pytest.raises(AdminApiError):
            check_key(connect(cred), leaked)
        _, fresh = v.upstream_secret("default")
        check_key(connect(cred), fresh)
        alerts = [r for r in v.audit.list() if r.action == "upstream.emergency_revoke"]
        assert alerts and alerts[0].details["priority"] == "high"
    assert len(platform.projects[PROJECT]) == 1


def test_emergency_revoke_without_admin_key(run: Run, platform: FakeOpenAIPlatform) -> None:
    run("upstream", "admin-key", "remove", "default")
    run("upstream", "revoke", "default", "--now", "--yes", expect=4)  # needs a replacement
    new = platform.add_service_account("replacement").key.value
    out = run("upstream", "revoke", "default", "--now", "--yes", "--from-env", "NEW", NEW=new)
    assert "revoke it NOW in the OpenAI dashboard" in out.output


def test_drift_detection(run: Run, platform: FakeOpenAIPlatform) -> None:
    out = run("upstream", "reconcile", "default", "--json")
    assert json.loads(out.stdout)["clean"]
    rogue = platform.add_service_account("rogue")
    user_key = platform.add_user_key()
    linked = next(a for a in platform.projects[PROJECT] if a != rogue.id)
    platform.delete_account(linked)  # deleted behind keyguard's back
    out = run("upstream", "reconcile", "default", "--json", expect=1)
    data = json.loads(out.stdout)
    assert [a["id"] for a in data["unknown_accounts"]] == [rogue.id]
    assert {k["id"] for k in data["unknown_keys"]} == {rogue.key.id, user_key.id}
    # version 1 is the CURRENT key: the one the gateway sends, so the report names its label
    assert data["missing"] == [{"version": 1, "service_account": linked, "label": "CURRENT"}]
    human = run("upstream", "reconcile", "default", expect=1)
    assert "account not created by keyguard" in human.output
    assert f"{linked}" in human.output and "version 1 (CURRENT)" in human.output


def test_admin_key_setup_checks(run: Run, platform: FakeOpenAIPlatform) -> None:
    admin = platform.new_admin_key("second")
    with _opened(run) as v:
        _, upstream_key = v.upstream_secret("default")
    run("upstream", "admin-key", "set", "default", "--project-id", PROJECT, "--from-env", "K",
        expect=2, K=upstream_key.reveal())  # an upstream key is not an admin key
    run("upstream", "admin-key", "set", "default", "--project-id", "proj_nope", "--from-env",
        "K", expect=7, K=admin)  # the API does not know that project
    run("upstream", "admin-key", "set", "default", "--project-id", PROJECT, "--from-env", "K",
        K=admin)
    shown = json.loads(run("upstream", "admin-key", "show", "default", "--json").stdout)
    assert shown["project_id"] == PROJECT and shown["fingerprint"].startswith("sha256:")


def test_key_rotate_and_list_ages(run: Run) -> None:
    created = json.loads(run("key", "create", "app", "--max-age", "30d", "--json").stdout)
    out = run("key", "rotate", created["key_id"], "--grace", "1h", "--json")
    rotated = json.loads(out.stdout)
    assert rotated["key_id"] == created["key_id"] and rotated["key"] != created["key"]
    listed = json.loads(run("key", "list", "--json").stdout)[0]
    assert listed["rotated_at"] is not None and listed["rotation_due_at"] > listed["rotated_at"]
    run("key", "rotate", created["key_id"])  # human output


def test_rotate_due_rotates_what_is_due(run: Run, home_env: dict[str, str]) -> None:
    settings = load_settings({"home": Path(home_env["KEYGUARD_HOME"])})
    long_ago = datetime.now(timezone.utc) - timedelta(days=100)
    master = MasterKey.from_base64(home_env["KEYGUARD_MASTER_KEY"])
    assert settings.db_path is not None
    old = Vault.open(SqliteStore(settings.db_path), master, clock=lambda: long_ago)
    old.add_upstream("manual", Secret(generate_openai_style_key()), max_age=timedelta(days=90))
    record, _ = old.create_key(KeySpec(name="due", upstream="default", max_age=timedelta(days=30)))
    old.close()
    _age_upstream(settings.db_path, "default")
    out = run("rotate", "--due", "--grace", "0s", "--json")
    data = json.loads(out.stdout)
    assert [r["upstream"] for r in data["rotations"]] == ["default"]
    assert data["rotations"][0]["state"] == "retired"
    assert [k["key_id"] for k in data["keys"]] == [record.key_id]
    assert ["manual", "due: no admin key: rotate it by hand"] in data["problems"]
    again = json.loads(run("rotate", "--due", "--json").stdout)
    assert again["rotations"] == [] and again["keys"] == []
    run.outputs.remove(out.output)  # it holds the new virtual key, shown once on purpose


def _age_upstream(db: Any, name: str) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE upstreams SET max_age_s = ?, last_rotated_at = ? WHERE name = ?",
                     (86400.0, "2020-01-01T00:00:00+00:00", name))
    conn.close()


def test_rotate_waits_until_the_old_key_is_retired(run: Run, platform: FakeOpenAIPlatform) -> None:
    with _opened(run) as v:
        _, old = v.upstream_secret("default")
    platform.use(old.reveal())  # in use right up to the switch
    out = run("rotate", "default", "--grace", "0s", "--wait", "--poll", "1s")
    assert "retired" in out.output and "stopped advancing" in out.output
    out = run("rotate", "--resume")
    assert "nothing to rotate" in out.output
    run("rotate", expect=2)  # nothing named
    run("rotate", "default", "--abort", expect=4)  # nothing in flight
