"""A compromised CURRENT or PENDING upstream key makes the credential due at once: the scheduled
pass (``rotate --due``, the serve loop) replaces it when an admin key is configured and reports
it clearly when not; the upstream commands and ``vault status`` show the state; an operator
can mark a version by hand. Against the fake OpenAI platform; no key value in any output."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.cli.main import cli
from keyguard.domain.records import Label
from keyguard.domain.rotation import RotationState
from keyguard.errors import VaultError
from keyguard.rotation.admin_api import AdminApiError, check_key
from keyguard.rotation.schedule import PeriodicRotation, run_due
from keyguard.vault import Vault
from rotation.conftest import PROJECT, rotator
from rotation.test_cli_rotation import Run, _opened, run  # noqa: F401 - the fixture

S = RotationState
__all__ = ["run"]


# -- the scheduled pass, in process ------------------------------------------------------------


def test_due_pass_emergency_rotates_a_compromised_current_key(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    _, leaked = vault.upstream_secret("default")
    assert run_due(rotator(vault, connect)).started == []  # nothing due: no max_age
    vault.mark_upstream_compromised("default", 1, "seen in a CI log", source="cli")
    result = run_due(rotator(vault, connect), actor="tester", source="test")
    ((name, done),) = result.emergency
    assert name == "default" and (done.revoked_version, done.new_version) == (1, 2)
    assert result.manual == [] and result.errors == [] and result.started == []
    cred = vault.get_upstream("default")
    assert [(v.version, v.label) for v in cred.versions] == [(1, None), (2, Label.CURRENT)]
    assert cred.versions[0].compromised_reason == "seen in a CI log"  # the first mark is kept
    assert cred.compromised_in_use() == ()
    with pytest.raises(AdminApiError):
        check_key(connect(cred), leaked)
    assert len(platform.projects[PROJECT]) == 1
    again = run_due(rotator(vault, connect))  # nothing left to do
    assert again.emergency == [] and again.started == [] and again.manual == []


def test_due_pass_reports_a_compromised_key_it_cannot_rotate(
    vault: Vault, connect: Any, log_lines: list[str]
) -> None:
    vault.remove_admin_key("default")
    vault.mark_upstream_compromised("default", 1, "reported by a user", source="cli")
    result = run_due(rotator(vault, connect))
    (item,) = result.compromised_manual
    assert result.manual == [item] and result.emergency == [] and result.errors == []
    assert (item.name, item.compromised, item.compromised_version) == ("default", Label.CURRENT, 1)
    assert "no admin key" in item.reason and "upstream revoke default --now" in item.reason
    # the serve loop says so in its log, every pass, until the key is replaced
    periodic = PeriodicRotation(rotator(vault, connect), interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _warned(log_lines):
            time.sleep(0.05)
    finally:
        periodic.stop()
    assert _warned(log_lines), log_lines


def _warned(lines: list[str]) -> bool:
    return any(
        "keyguard.rotation WARNING" in line and "default" in line and "compromised" in line
        for line in list(lines)
    )


def test_a_compromised_pending_key_is_never_promoted(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    def fail_after_create(step: str) -> None:
        if step == "created":
            raise AdminApiError("interrupted", status=503)

    with pytest.raises(AdminApiError):
        rotator(vault, connect, after_step=fail_after_create).start("default")
    pending = vault.get_upstream("default").version_with(Label.PENDING)
    assert pending is not None and pending.version == 2
    vault.mark_upstream_compromised("default", 2, "leaked while pending", source="cli")
    with pytest.raises(VaultError, match="marked compromised"):
        rotator(vault, connect).resume("default")  # 'rotate --resume' refuses to go on
    result = run_due(rotator(vault, connect, grace=3600.0))
    assert [r.state for r in result.aborted] == [S.ABORTED]
    assert [r.state for r in result.started] == [S.FINISHED] and result.resumed == []
    cred = vault.get_upstream("default")
    labels = {v.version: v.label for v in cred.versions}
    assert labels == {1: Label.PREVIOUS, 2: None, 3: Label.CURRENT}
    assert cred.compromised_in_use() == ()
    assert len(platform.projects[PROJECT]) == 2  # the old one (in its grace window), the new


def test_a_compromised_previous_key_is_retired_without_waiting_for_its_grace(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    _, old_key = vault.upstream_secret("default")
    done = rotator(vault, connect, grace=3600.0).start("default")
    assert done.state is S.FINISHED  # switched; the old key waits out its hour of grace
    assert run_due(rotator(vault, connect, grace=3600.0)).resumed[0].state is S.FINISHED
    assert len(platform.projects[PROJECT]) == 2
    vault.mark_upstream_compromised("default", 1, "found in a pastebin", source="cli")
    result = run_due(rotator(vault, connect, grace=3600.0))
    assert [r.state for r in result.resumed] == [S.RETIRED] and result.errors == []
    assert "compromised" in (result.resumed[0].detail or "")
    cred = vault.get_upstream("default")
    assert {v.version: v.label for v in cred.versions} == {1: None, 2: Label.CURRENT}
    assert len(platform.projects[PROJECT]) == 1  # the leaked key's account is deleted
    with pytest.raises(AdminApiError):
        check_key(connect(cred), old_key)


# -- the commands ------------------------------------------------------------------------------


def test_mark_compromised_command_confirms_and_shows_everywhere(run: Run) -> None:
    refused = CliRunner().invoke(
        cli,
        ["upstream", "mark-compromised", "default", "--version", "1", "--reason", "x"],
        env=run.env,
        input="n\n",
    )
    assert refused.exit_code == 1 and "Aborted" in refused.output  # nothing marked
    assert (
        json.loads(run("upstream", "show", "default", "--json").stdout)["versions"][0][
            "compromised"
        ]
        is False
    )
    run(
        "upstream",
        "mark-compromised",
        "default",
        "--version",
        "9",
        "--reason",
        "x",
        "--yes",
        expect=4,
    )
    marked = run(
        "upstream",
        "mark-compromised",
        "default",
        "--version",
        "1",
        "--reason",
        "posted in a public gist",
        "--yes",
    )
    assert "version 1 (CURRENT) is marked COMPROMISED" in marked.stdout
    assert "WARNING" in marked.stderr

    shown = json.loads(run("upstream", "show", "default", "--json").stdout)
    (version,) = shown["versions"]
    assert version["compromised"] is True and version["compromised_source"] == "cli"
    assert version["compromised_reason"] == "posted in a public gist"
    assert version["compromised_at"] is not None and shown["compromised_in_use"] == [1]
    text = run("upstream", "show", "default")
    assert "COMPROMISED" in text.stdout and version["compromised_at"] in text.stdout
    assert "posted in a public gist" in text.stdout
    listed = json.loads(run("upstream", "list", "--json").stdout)
    assert listed[0]["versions"][0]["compromised_at"] == version["compromised_at"]
    listing = run("upstream", "list")
    assert "COMPROMISED v1" in listing.stdout and "WARNING" in listing.stderr

    status = run("vault", "status")
    assert "upstream 'default' version 1 (CURRENT) is COMPROMISED" in status.stderr
    warnings = json.loads(run("vault", "status", "--json").stdout)["warnings"]
    assert len(warnings) == 1 and "COMPROMISED" in warnings[0]

    again = run(
        "upstream",
        "mark-compromised",
        "default",
        "--version",
        "1",
        "--reason",
        "later",
        "--yes",
        "--json",
    )
    assert (
        json.loads(again.stdout)["versions"][0]["compromised_reason"]
        == version["compromised_reason"]
    )  # the first mark is kept
    with _opened(run) as v:
        outcomes = [r.outcome for r in v.audit.list() if r.action == "upstream.compromised"]
    assert outcomes == ["flagged", "already_flagged"]


def test_rotate_due_replaces_a_compromised_key_with_the_admin_key(run: Run) -> None:
    run("upstream", "mark-compromised", "default", "--version", "1", "--reason", "leak", "--yes")
    out = json.loads(run("rotate", "--due", "--json").stdout)
    (entry,) = out["compromised"]
    assert entry == {**entry, "upstream": "default", "version": 1, "action": "emergency_revoke"}
    assert out["problems"] == []
    assert "COMPROMISED" not in run("vault", "status").stderr
    shown = json.loads(run("upstream", "show", "default", "--json").stdout)
    assert [(v["label"], v["compromised"]) for v in shown["versions"]] == [
        (None, True),
        ("CURRENT", False),
    ]


def test_rotate_due_without_an_admin_key_reports_the_compromised_key(run: Run) -> None:
    run("upstream", "admin-key", "remove", "default")
    assert "COMPROMISED" not in run("rotate", "--due").output
    run("upstream", "mark-compromised", "default", "--version", "1", "--reason", "leak", "--yes")
    text = run("rotate", "--due", expect=1)
    assert "default: COMPROMISED: version 1 (CURRENT) is compromised" in text.stderr
    assert "upstream revoke default --now" in text.stderr
    out = json.loads(run("rotate", "--due", "--json", expect=1).stdout)
    (entry,) = out["compromised"]
    assert entry == {
        **entry,
        "upstream": "default",
        "version": 1,
        "label": "CURRENT",
        "action": "manual",
    }
    assert out["problems"][0][1].startswith("COMPROMISED: ")


def test_scan_revoke_without_an_admin_key_leaves_the_credential_due(
    run: Run, tmp_path: Any
) -> None:
    run("upstream", "admin-key", "remove", "default")
    with _opened(run) as v:
        _, leaked = v.upstream_secret("default", audit=False)
        leaked_value = leaked.reveal()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "conf.py").write_text(f"KEY = '{leaked_value}'\n")
    scanned = run("scan", "--revoke-managed", str(tree), expect=1)
    assert "marked upstream credential 'default' version 1 compromised" in scanned.output
    assert "WARNING" in run("vault", "status").stderr
    text = run("rotate", "--due", expect=1)
    assert "COMPROMISED" in text.stderr
    assert leaked_value not in "\n".join(run.outputs)
