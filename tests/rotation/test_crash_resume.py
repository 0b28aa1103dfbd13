"""kill -9 of a real ``keyguard rotate`` process after each step, then ``keyguard rotate
--resume``: the rotation completes, no key is lost, no service account is orphaned."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.config import load_settings
from keyguard.domain.records import Label
from keyguard.domain.rotation import RotationState
from keyguard.rotation.admin_api import check_key
from keyguard.wiring import open_vault
from rotation.conftest import PROJECT

KEYGUARD = [sys.executable, "-m", "keyguard.cli"]
STEPS = ["creating", "create:api", "created", "tested", "finished", "retire:api", "retired"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYGUARD, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("step", STEPS)
def test_kill_after_each_step_then_resume(
    step: str, home_env: dict[str, str], platform: FakeOpenAIPlatform, connect: object
) -> None:
    killed = run(
        {**home_env, "KEYGUARD_FAULT_KILL_AFTER": step}, "rotate", "default", "--grace", "0s"
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    resumed = run(home_env, "rotate", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    settings = load_settings({"home": Path(home_env["KEYGUARD_HOME"])})
    vault = open_vault(settings, home_env)
    try:
        r = vault.store.get_rotation("default")
        assert r is not None and r.state is RotationState.RETIRED, r
        cred = vault.get_upstream("default")
        current = cred.version_with(Label.CURRENT)
        assert current is not None and current.version == r.new_version
        assert cred.version_with(Label.PENDING) is None
        _, secret = vault.upstream_secret("default")
        check_key(connect(cred), secret)  # type: ignore[operator]  # no key lost: CURRENT works
        links = {s.account_id: s for s in vault.store.list_service_accounts("default")}
        live = set(platform.projects[PROJECT])
        # no orphan: the only account left is CURRENT's, and keyguard knows it
        assert live == {r.new_account_id}
        assert links[r.new_account_id].deleted_at is None
        assert all(s.deleted_at is not None for a, s in links.items() if a != r.new_account_id)
        assert vault.audit.verify().ok
        outputs = killed.stdout + killed.stderr + resumed.stdout + resumed.stderr
        assert not [k for k in platform.admin_keys if k in outputs]
        assert secret.reveal() not in outputs
    finally:
        vault.close()


def test_serve_resumes_an_interrupted_rotation_on_start(
    home_env: dict[str, str], platform: FakeOpenAIPlatform
) -> None:
    """`keyguard serve` continues a rotation that a crash interrupted, without any command."""
    import socket
    import time

    killed = run(
        {**home_env, "KEYGUARD_FAULT_KILL_AFTER": "created"}, "rotate", "default", "--grace", "0s"
    )
    assert killed.returncode == -signal.SIGKILL
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*KEYGUARD, "serve", "--port", str(port)],
        env=home_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    settings = load_settings({"home": Path(home_env["KEYGUARD_HOME"])})
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            vault = open_vault(settings, home_env)
            try:
                r = vault.store.get_rotation("default")
                state = r.state if r is not None else None
            finally:
                vault.close()
            if state is RotationState.RETIRED:
                break
            time.sleep(0.2)
        assert state is RotationState.RETIRED, state
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("step", ["creating", "create:api", "created", "tested"])
def test_kill_after_each_step_then_abort(
    step: str, home_env: dict[str, str], platform: FakeOpenAIPlatform, connect: object
) -> None:
    before = set(platform.projects[PROJECT])
    killed = run({**home_env, "KEYGUARD_FAULT_KILL_AFTER": step}, "rotate", "default")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    aborted = run(home_env, "rotate", "default", "--abort", "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert set(platform.projects[PROJECT]) == before  # the new account is gone, the old kept
    settings = load_settings({"home": Path(home_env["KEYGUARD_HOME"])})
    vault = open_vault(settings, home_env)
    try:
        r = vault.store.get_rotation("default")
        assert r is not None and r.state is RotationState.ABORTED, r
        cred = vault.get_upstream("default")
        assert [v.label for v in cred.versions if v.label] == [Label.CURRENT]
        assert cred.version_with(Label.CURRENT).version == 1  # type: ignore[union-attr]
        _, secret = vault.upstream_secret("default")
        check_key(connect(cred), secret)  # type: ignore[operator]
    finally:
        vault.close()
    again = run(home_env, "rotate", "default", "--grace", "0s")
    assert again.returncode == 0, again.stderr
