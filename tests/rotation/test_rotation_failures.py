"""Rotation under real-world failures: an Admin API call that fails after the vault already
switched, keys mangled in transit, ... Against the fake OpenAI platform; no key value in any
output."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.domain.records import Label
from keyguard.errors import UpstreamError
from keyguard.rotation.admin_api import AdminApiError, check_key
from keyguard.rotation.manual import emergency_revoke
from keyguard.rotation.schedule import run_due
from keyguard.vault import Vault
from rotation.conftest import PROJECT, rotator
from rotation.test_cli_rotation import Run, run  # noqa: F401 - the fixture

__all__ = ["run"]


def test_a_leaked_key_whose_deletion_failed_is_deleted_by_the_next_pass(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    """Emergency revoke switched to a fresh key, then deleting the leaked key's service account
    failed (a 500): the leaked version holds no label any more, but its key still works at
    OpenAI. The next scheduled pass must finish the job."""
    _, leaked = vault.upstream_secret("default")
    platform.fail_delete = 1
    with pytest.raises(UpstreamError, match="leaked key still works"):
        emergency_revoke(vault, "default", connect, actor="tester", source="test")
    cred = vault.get_upstream("default")
    assert {v.version: v.label for v in cred.versions} == {1: None, 2: Label.CURRENT}
    check_key(connect(cred), leaked)  # still alive at OpenAI
    result = run_due(rotator(vault, connect), actor="tester", source="test")
    assert result.errors == []
    with pytest.raises(AdminApiError):
        check_key(connect(cred), leaked)
    (link,) = [s for s in vault.store.list_service_accounts("default") if s.version == 1]
    assert link.deleted_at is not None
    assert len(platform.projects[PROJECT]) == 1
    again = run_due(rotator(vault, connect), actor="tester", source="test")
    assert again.errors == [] and len(platform.projects[PROJECT]) == 1


def test_a_compromised_previous_key_outside_a_rotation_is_cut_off(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    """After a manual rotation the old key (made by keyguard's service account) stays PREVIOUS
    with no rotation in flight; once marked compromised, the next pass deletes its account."""
    from keyguard.rotation.manual import rotate_manually

    _, old = vault.upstream_secret("default")
    fresh = platform.add_service_account("made-by-hand").key.value
    rotate_manually(vault, "default", _secret(fresh), connect, actor="tester", source="test")
    vault.mark_upstream_compromised("default", 1, "found in a log", source="cli")
    result = run_due(rotator(vault, connect), actor="tester", source="test")
    assert result.cut_off == [("default", 1)] and result.errors == []
    cred = vault.get_upstream("default")
    assert {v.version: v.label for v in cred.versions} == {1: None, 2: Label.CURRENT}
    with pytest.raises(AdminApiError):
        check_key(connect(cred), old)
    actions = [a.action for a in vault.audit.list()]
    assert "upstream.leaked_account_deleted" in actions


def _secret(value: str) -> Any:
    from keyguard.domain.secret import Secret

    return Secret(value)


def test_rotate_due_reports_the_cut_off(run: Run) -> None:
    import json

    run.platform.fail_delete = 1
    failed = run("upstream", "revoke", "default", "--now", "--yes", expect=7)
    assert "version 2 of 'default' is CURRENT" in failed.output
    assert "rotate --due" in failed.output
    out = json.loads(run("rotate", "--due", "--json").stdout)
    (entry,) = out["compromised"]
    assert entry == {**entry, "version": 1, "action": "service_account_deleted"}
    assert len(run.platform.projects[PROJECT]) == 1


@pytest.mark.parametrize("tail", ["\n", "\r\nsecond line"])
def test_a_key_with_a_line_break_is_refused_without_quoting_it(
    home_env: dict[str, str], platform: FakeOpenAIPlatform, tail: str
) -> None:
    """A key read from a variable filled from a file keeps its trailing newline; http.client
    refuses such a header with a ValueError quoting the whole 'Bearer <key>' (a traceback)."""
    import subprocess
    import sys

    new = platform.add_service_account("made-by-hand").key.value
    for args in (["rotate"], ["revoke", "--now", "--yes"]):
        out = subprocess.run(
            [sys.executable, "-m", "keyguard.cli", "upstream", *args, "default", "--from-env", "K"],
            env={**home_env, "K": new + tail},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        text = out.stdout + out.stderr
        assert new not in text and "Traceback" not in text, args
        assert out.returncode not in (0, 1) and "line break" in text, (args, out.returncode)


def test_an_admin_key_for_another_project_never_switches_the_upstream(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    """The credential sends OpenAI-Project: proj_keyguardtest, its admin key was set for another
    project of the organization: a key created there passes GET /models without the header,
    but every proxied request (which carries the header) is refused."""
    from keyguard.domain.secret import Secret
    from keyguard.errors import KeyguardError

    other = "proj_other"
    platform.projects[other], platform.user_keys[other] = {}, []
    vault.set_admin_key("default", Secret(platform.new_admin_key()), project_id=other)
    with pytest.raises(KeyguardError, match="proj_other"):
        rotator(vault, connect).start("default")
    cred = vault.get_upstream("default")
    assert [v.label for v in cred.versions] == [Label.CURRENT]
    assert platform.projects[other] == {}
    with pytest.raises(KeyguardError, match="proj_other"):
        emergency_revoke(vault, "default", connect, actor="tester", source="test")
    assert platform.projects[other] == {}


def test_admin_key_set_refuses_another_project(run: Run) -> None:
    run.platform.projects["proj_other"], run.platform.user_keys["proj_other"] = {}, []
    out = run(
        "upstream",
        "admin-key",
        "set",
        "default",
        "--project-id",
        "proj_other",
        "--from-env",
        "ADMIN",
        expect=2,
        ADMIN=run.platform.new_admin_key(),
    )
    assert "proj_other" in out.output and "OpenAI-Project" in out.output


def test_the_old_key_is_not_retired_while_the_new_one_is_gone(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any, db_path: Any, master: Any
) -> None:
    """The new service account was deleted out of band (a human cleaning up the dashboard):
    the gateway lives on the PREVIOUS fallback. Retiring it at max-grace would delete the
    only working key; it is kept until a working CURRENT exists again."""
    from datetime import timedelta

    from keyguard.domain.rotation import RotationState
    from keyguard.rotation.manual import rotate_manually
    from keyguard.storage.sqlite import SqliteStore

    now = [vault.now()]
    v = Vault.open(SqliteStore(db_path), master, clock=lambda: now[0])
    rot = rotator(v, connect, grace=60.0, max_grace=600.0)
    r = rot.start("default")
    assert r.state is RotationState.FINISHED
    _, old = v.upstream_secret("default", Label.PREVIOUS)
    assert r.new_account_id is not None and platform.delete_account(r.new_account_id)
    now[0] += timedelta(seconds=700)
    r = rot.resume("default")  # type: ignore[assignment]
    assert r.state is RotationState.FINISHED and "gone" in r.detail, r
    cred = v.get_upstream("default")
    assert cred.version_with(Label.PREVIOUS).version == 1  # type: ignore[union-attr]
    check_key(connect(cred), old)  # still the working fallback
    # a working CURRENT again (by hand): the old key is retired
    fresh = platform.add_service_account("made-by-hand").key.value
    rotate_manually(v, "default", _secret(fresh), connect, actor="tester", source="test")
    r = rot.resume("default")  # type: ignore[assignment]
    assert r.state is RotationState.RETIRED, r
    with pytest.raises(AdminApiError):
        check_key(connect(cred), old)
    v.close()
