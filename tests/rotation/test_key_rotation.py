"""Virtual-key rotation: same key id, new secret; the old one works until the grace window ends;
scope, limits and audit history carry over; planning of what is due."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.records import KeySpec, UpstreamCredential
from keyguard.domain.rotation import RotationInputs, plan_rotation
from keyguard.domain.secret import Secret
from keyguard.errors import Unauthenticated, VaultError
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

T0 = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kv(tmp_path: Path, clock: Clock) -> Vault:
    v = Vault.create(SqliteStore(tmp_path / "v.db"), MasterKey.generate(), clock=clock)
    v.add_upstream("default", Secret(generate_openai_style_key()))
    return v


def test_rotate_keeps_id_and_scope_old_secret_has_grace(kv: Vault, clock: Clock) -> None:
    spec = KeySpec(name="app", upstream="default", allowed_models=("gpt-4o*",), rpm=60,
                   budget_usd=5.0, max_age=timedelta(days=30))
    record, old = kv.create_key(spec)
    auth = kv.authenticator(refresh_interval=0)
    assert auth.authenticate(old.reveal(), clock.now).key_id == record.key_id
    clock.now += timedelta(days=31)
    rotated, new = kv.rotate_key(record.key_id, grace=timedelta(hours=24))
    assert new.reveal() != old.reveal() and new.reveal().startswith(f"kg_{record.key_id}")
    assert rotated == kv.get_key(record.key_id)  # scope, limits, budget unchanged
    assert (rotated.rpm, rotated.budget_usd, rotated.allowed_models) == (60, 5.0, ("gpt-4o*",))
    auth.refresh(force=True)
    assert auth.authenticate(new.reveal(), clock.now).key_id == record.key_id
    assert auth.authenticate(old.reveal(), clock.now + timedelta(hours=23)).key_id
    with pytest.raises(Unauthenticated):
        auth.authenticate(old.reveal(), clock.now + timedelta(hours=24))
    assert auth.authenticate(new.reveal(), clock.now + timedelta(days=2)).key_id
    assert kv.key_rotated_at()[record.key_id] == clock.now
    actions = [r.action for r in kv.audit.list() if r.subject == record.key_id]
    assert actions == ["key.create", "key.rotate"]
    assert old.reveal() not in repr(kv.audit.list()) and new.reveal() not in repr(kv.audit.list())


def test_second_rotation_shortens_nothing_it_should_not(kv: Vault, clock: Clock) -> None:
    record, first = kv.create_key(KeySpec(name="app", upstream="default"))
    _, second = kv.rotate_key(record.key_id, grace=timedelta(hours=1))
    clock.now += timedelta(minutes=10)
    _, third = kv.rotate_key(record.key_id, grace=timedelta(hours=24))
    auth = kv.authenticator(refresh_interval=0)
    later = clock.now + timedelta(hours=2)
    with pytest.raises(Unauthenticated):  # the first secret's window is not extended
        auth.authenticate(first.reveal(), later)
    assert auth.authenticate(second.reveal(), later).key_id == record.key_id
    assert auth.authenticate(third.reveal(), later).key_id == record.key_id


def test_zero_grace_and_revoked_keys(kv: Vault, clock: Clock) -> None:
    record, old = kv.create_key(KeySpec(name="app", upstream="default"))
    _, new = kv.rotate_key(record.key_id, grace=timedelta(0))
    auth = kv.authenticator(refresh_interval=0)
    with pytest.raises(Unauthenticated):
        auth.authenticate(old.reveal(), clock.now)
    kv.revoke_key(record.key_id)
    with pytest.raises(VaultError):
        kv.rotate_key(record.key_id)


def test_plan_rotation_finds_due_items() -> None:
    up = UpstreamCredential("a", created_at=T0, max_age=timedelta(days=90))
    fresh = UpstreamCredential("b", created_at=T0, last_rotated_at=T0 + timedelta(days=80),
                               max_age=timedelta(days=90))
    manual = UpstreamCredential("c", created_at=T0, max_age=timedelta(days=1))
    busy = UpstreamCredential("d", created_at=T0, max_age=timedelta(days=1))
    from keyguard.domain.records import VirtualKey

    k1 = VirtualKey("aaaaaaaaaaaa", "k1", "a", T0, max_age=timedelta(days=30))
    k2 = VirtualKey("bbbbbbbbbbbb", "k2", "a", T0, max_age=timedelta(days=30))
    k3 = VirtualKey("cccccccccccc", "k3", "a", T0, max_age=timedelta(days=1), revoked_at=T0)
    now = T0 + timedelta(days=91)
    due = plan_rotation(RotationInputs(
        upstreams=[up, fresh, manual, busy], keys=[k1, k2, k3],
        key_rotated_at={"bbbbbbbbbbbb": now - timedelta(days=1)},
        admin_upstreams=["a", "b", "d"], in_flight=["d"]), now)
    assert [(d.kind, d.name, d.automatic) for d in due] == [
        ("upstream", "c", False), ("virtual_key", "aaaaaaaaaaaa", True), ("upstream", "a", True)]


def test_admin_key_never_becomes_an_upstream_key(kv: Vault) -> None:
    from keyguard.errors import ConfigError

    admin = Secret(generate_openai_style_key("admin"))
    with pytest.raises(ConfigError):
        kv.add_upstream("other", admin)
    with pytest.raises(ConfigError):
        kv.add_upstream_version("default", admin, validate_key=False)
    _, upstream_key = kv.upstream_secret("default")
    with pytest.raises(ConfigError):  # and an upstream key is not an admin key
        kv.set_admin_key("default", upstream_key, project_id="proj_x", validate_key=False)
    kv.set_admin_key("default", admin, project_id="proj_x")
    assert kv.admin_key_record("default").fingerprint == admin.fingerprint  # type: ignore[union-attr]
    record, revealed = kv.reveal_admin_key("default", purpose="test")
    assert revealed == admin and record.project_id == "proj_x"
    uses = [r for r in kv.audit.list() if r.action == "admin_key.use"]
    assert uses[-1].details == {"purpose": "test", "fingerprint": admin.fingerprint}
    assert admin.reveal() not in repr(kv.audit.list())


def test_admin_key_is_rewrapped_with_the_vault(kv: Vault) -> None:
    admin = Secret(generate_openai_style_key("admin"))
    kv.set_admin_key("default", admin, project_id="proj_x")
    before = kv.store.get_admin_key("default")
    kv.rotate_kek()
    after = kv.store.get_admin_key("default")
    assert before is not None and after is not None and before[1] != after[1]
    assert kv.reveal_admin_key("default", purpose="test")[1] == admin
