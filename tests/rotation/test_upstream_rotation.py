"""Upstream rotation against the fake Admin API, in process: the full state machine, grace and
last-use, failures, resume, abort, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import Label
from keyguard.domain.rotation import RotationState
from keyguard.errors import ConcurrentUpdate, UpstreamError
from keyguard.rotation.admin_api import AdminApiError, check_key
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from rotation.conftest import PROJECT, rotator

S = RotationState


def live_accounts(platform: FakeOpenAIPlatform) -> set[str]:
    return set(platform.projects[PROJECT])


def reject_new_key(vault: Vault, platform: FakeOpenAIPlatform) -> Callable[[str], None]:
    """An ``after_step`` hook: once the new key is created, the platform refuses it (401)."""

    def hook(step: str) -> None:
        if step == "created":
            _, pending = vault.upstream_secret("default", Label.PENDING)
            platform.forced_401.add(pending.reveal())

    return hook


def test_full_rotation_switches_and_retires(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    _, old = vault.upstream_secret("default")
    old_account = next(iter(live_accounts(platform)))
    r = rotator(vault, connect).start("default")
    assert r.state is S.RETIRED, r
    cred = vault.get_upstream("default")
    assert cred.version_with(Label.CURRENT).version == 2  # type: ignore[union-attr]
    assert cred.version_with(Label.PREVIOUS) is None and cred.version_with(Label.PENDING) is None
    _, new = vault.upstream_secret("default")
    endpoint = connect(cred)
    check_key(endpoint, new)  # the new key works
    with pytest.raises(AdminApiError) as err:  # the old key is gone at the upstream
        check_key(endpoint, old)
    assert err.value.http_status == 401
    assert live_accounts(platform) == {r.new_account_id}
    assert old_account not in live_accounts(platform)
    links = {s.version: s for s in vault.store.list_service_accounts("default")}
    assert links[1].deleted_at is not None and links[2].deleted_at is None
    actions = [a.action for a in vault.audit.list()]
    for step in ("start", "finish", "retire"):
        assert f"upstream.rotate.{step}" in actions
    assert "admin_key.use" in actions
    assert vault.audit.verify().ok


def test_grace_window_waits_for_last_use_to_stop(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    _, old = vault.upstream_secret("default")
    rot = rotator(vault, connect, grace=0.0, max_grace=3600.0)
    r = rot.start("default")
    # not used since the switch: retired at once
    assert r.state is S.RETIRED
    # second rotation; the old key (v2) keeps being used after the switch
    _, v2 = vault.upstream_secret("default")
    seen: list[str] = []

    def use_old_key(step: str) -> None:
        seen.append(step)
        if step == "finished":
            assert platform.use(v2.reveal())

    rot2 = rotator(vault, connect, grace=0.0, max_grace=3600.0, after_step=use_old_key)
    r = rot2.start("default")
    assert r.state is S.FINISHED and r.detail == "the old key is still in use"
    assert r.old_observed
    r = rot2.resume("default")  # last use did not move since the previous check
    assert r is not None and r.state is S.RETIRED, r
    assert "the old key's last use stopped advancing" in r.detail
    assert old != v2


def test_max_grace_forces_retirement(vault: Vault, platform: FakeOpenAIPlatform, connect: Any,
                                     db_path: Path, master: MasterKey) -> None:
    clock_now = [vault.now()]
    v = Vault.open(SqliteStore(db_path), master, clock=lambda: clock_now[0])
    rot = rotator(v, connect, grace=60.0, max_grace=600.0)
    r = rot.start("default")
    assert r.state is S.FINISHED and "grace window" in r.detail
    _, prev = v.upstream_secret("default", Label.PREVIOUS)
    clock_now[0] += timedelta(seconds=120)
    platform.use(prev.reveal())
    r = rot.resume("default")
    assert r is not None and r.state is S.FINISHED and r.detail == "the old key is still in use"
    clock_now[0] += timedelta(seconds=600)
    platform.use(prev.reveal())
    r = rot.resume("default")
    assert r is not None and r.state is S.RETIRED and "maximum" in r.detail
    v.close()


def test_failed_create_is_resumed_without_orphans(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    platform.fail_create = 1
    rot = rotator(vault, connect)
    with pytest.raises(AdminApiError) as err:
        rot.start("default")
    assert err.value.http_status == 500
    assert vault.store.get_rotation("default").state is S.CREATING  # type: ignore[union-attr]
    with pytest.raises(ConcurrentUpdate):
        rot.start("default")  # one rotation per credential: resume it instead
    r = rot.resume("default")
    assert r is not None and r.state is S.RETIRED
    assert live_accounts(platform) == {r.new_account_id}


def test_failed_test_step_keeps_current_then_abort_cleans_up(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    rot = rotator(vault, connect, after_step=reject_new_key(vault, platform))
    before = live_accounts(platform)
    with pytest.raises(UpstreamError):
        rot.start("default")
    r = vault.store.get_rotation("default")
    assert r is not None and r.state is S.CREATED
    assert vault.get_upstream("default").version_with(Label.CURRENT).version == 1  # type: ignore[union-attr]
    done = rot.abort("default")
    assert done.state is S.ABORTED
    assert live_accounts(platform) == before
    assert vault.get_upstream("default").version_with(Label.PENDING) is None
    again = rotator(vault, connect).start("default")  # a new rotation may start afterwards
    assert again.state is S.RETIRED


def test_concurrent_rotations_one_wins(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any, db_path: Path, master: MasterKey
) -> None:
    vaults = [Vault.open(SqliteStore(db_path), master) for _ in range(4)]
    barrier = threading.Barrier(len(vaults))
    outcomes: list[object] = []

    def run(v: Vault) -> None:
        rot = rotator(v, connect, grace=3600.0)
        barrier.wait()
        try:
            outcomes.append(rot.start("default").state)
        except ConcurrentUpdate as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in vaults]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wins = [o for o in outcomes if o is S.FINISHED]
    assert len(wins) == 1, outcomes
    assert all(isinstance(o, ConcurrentUpdate) for o in outcomes if o is not S.FINISHED)
    assert len(live_accounts(platform)) == 2  # the old key (in its grace window) and the new one
    assert len(vault.get_upstream("default").versions) == 2
    for v in vaults:
        v.close()


def test_emergency_revoke_aborts_an_unswitched_rotation(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    from keyguard.rotation.manual import emergency_revoke

    with pytest.raises(UpstreamError):
        rotator(vault, connect, after_step=reject_new_key(vault, platform)).start("default")
    _, leaked = vault.upstream_secret("default")
    result = emergency_revoke(vault, "default", connect, actor="tester", source="test")
    assert result.account_deleted and result.revoked_version == 1
    assert vault.store.get_rotation("default").state is S.ABORTED  # type: ignore[union-attr]
    cred = vault.get_upstream("default")
    assert [v.label for v in cred.versions] == [None, None, Label.CURRENT]
    assert len(live_accounts(platform)) == 1
    with pytest.raises(AdminApiError):
        check_key(connect(cred), leaked)
    # the next rotation starts from the fresh key (just used by the emergency's test call)
    rot = rotator(vault, connect)
    assert rot.start("default").state is S.FINISHED
    assert rot.resume("default").state is S.RETIRED  # type: ignore[union-attr]
    assert len(live_accounts(platform)) == 1


def test_periodic_pass_resumes_interrupted_rotation(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any
) -> None:
    import time

    from keyguard.rotation.schedule import PeriodicRotation

    platform.fail_create = 1
    rot = rotator(vault, connect)
    with pytest.raises(AdminApiError):
        rot.start("default")
    periodic = PeriodicRotation(rotator(vault, connect), interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = vault.store.get_rotation("default")
            if r is not None and r.state is S.RETIRED:
                break
            time.sleep(0.05)
    finally:
        periodic.stop()
    assert vault.store.get_rotation("default").state is S.RETIRED  # type: ignore[union-attr]
    assert live_accounts(platform) == {vault.store.get_rotation("default").new_account_id}  # type: ignore[union-attr]
