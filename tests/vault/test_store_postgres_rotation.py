"""RotationStore and SpendStore rules, run on PostgreSQL and on SQLite side by side.

The shared contract (``contract.py``) does not cover the rotation tables yet; these tests pin
the PostgreSQL backend to the SQLite reference: same results, same errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keyguard.domain.rotation import (
    AdminKeyRecord,
    RotationState,
    ServiceAccountLink,
    UpstreamRotation,
)
from keyguard.errors import AlreadyExists, ConcurrentUpdate, KeyNotFound
from keyguard.storage.postgres import PostgresStore
from keyguard.storage.sqlite import SqliteStore
from vault.contract import T, cred
from vault.pg_fixtures import pg_schema, pg_store_url, pg_url

__all__ = ["pg_schema", "pg_store_url", "pg_url"]  # fixtures: pytest finds them here


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "postgres":
        s: Any = PostgresStore(request.getfixturevalue("pg_store_url"))
    else:
        s = SqliteStore(tmp_path / "r.db")
    s.add_upstream(cred())
    yield s
    s.close()


def rotation(state: RotationState, rid: str = "r1") -> UpstreamRotation:
    return UpstreamRotation(
        upstream="prod",
        rotation_id=rid,
        state=state,
        project_id="proj_1",
        account_name=f"keyguard-{rid}",
        started_at=T,
        updated_at=T,
        grace=timedelta(hours=1),
        max_grace=timedelta(days=1),
    )


def test_save_rotation_is_a_compare_and_set(store: Any) -> None:
    g = store.generation()
    creating = rotation(RotationState.CREATING)
    store.save_rotation(creating, None)
    with pytest.raises(ConcurrentUpdate):
        store.save_rotation(rotation(RotationState.CREATING, "r2"), None)  # one in progress
    created = creating.advance(RotationState.CREATED, T + timedelta(seconds=1), new_version=2)
    store.save_rotation(created, ("r1", RotationState.CREATING))
    with pytest.raises(ConcurrentUpdate):
        store.save_rotation(created, ("r1", RotationState.CREATING))  # stale expectation
    assert store.get_rotation("prod") == created
    done = created.advance(RotationState.RETIRED, T + timedelta(seconds=2))
    store.save_rotation(done, ("r1", RotationState.CREATED))
    store.save_rotation(rotation(RotationState.CREATING, "r3"), None)  # terminal: replaced
    assert [r.rotation_id for r in store.list_rotations()] == ["r3"]
    assert store.get_rotation("nope") is None
    with pytest.raises(KeyNotFound):
        store.save_rotation(
            UpstreamRotation(**{**rotation(RotationState.CREATING).__dict__, "upstream": "x"}),
            None,
        )
    assert store.generation() == g


def test_leases(store: Any) -> None:
    later = T + timedelta(minutes=5)
    assert store.acquire_lease("sched", "a", T, later)
    assert not store.acquire_lease("sched", "b", T + timedelta(minutes=1), later)
    assert store.acquire_lease("sched", "a", T, later + timedelta(minutes=5))  # extends
    assert store.get_lease("sched").expires_at == later + timedelta(minutes=5)
    assert store.acquire_lease(
        "sched", "b", later + timedelta(minutes=6), later + timedelta(hours=1)
    )
    assert not store.release_lease("sched", "a")
    assert store.release_lease("sched", "b")
    assert store.get_lease("sched") is None


def test_admin_keys(store: Any) -> None:
    rec = AdminKeyRecord("prod", "proj_1", "sha256:00", T)
    with pytest.raises(KeyNotFound):
        store.put_admin_key(AdminKeyRecord("nope", "p", "f", T), b"s")
    store.put_admin_key(rec, b"sealed-1")
    store.put_admin_key(AdminKeyRecord("prod", "proj_2", "sha256:01", T), b"sealed-2")
    got = store.get_admin_key("prod")
    assert got == (AdminKeyRecord("prod", "proj_2", "sha256:01", T), b"sealed-2")
    assert [a.project_id for a in store.list_admin_keys()] == ["proj_2"]
    assert store.delete_admin_key("prod") is True
    assert store.delete_admin_key("prod") is False
    assert store.get_admin_key("prod") is None


def test_service_account_links(store: Any) -> None:
    link = ServiceAccountLink("prod", 1, "proj_1", "svc_1", "key_1", T)
    store.add_service_account(link)
    store.add_service_account(ServiceAccountLink("other", 3, "proj_1", "svc_3", None, T))
    with pytest.raises(AlreadyExists):
        store.add_service_account(link)
    store.mark_service_account_deleted("prod", "svc_1", T + timedelta(hours=1))
    store.mark_service_account_deleted("prod", "svc_1", T + timedelta(hours=2))  # first kept
    assert store.list_service_accounts("prod") == [
        ServiceAccountLink("prod", 1, "proj_1", "svc_1", "key_1", T, T + timedelta(hours=1))
    ]
    assert [s.upstream for s in store.list_service_accounts()] == ["other", "prod"]
    with pytest.raises(KeyNotFound):
        store.mark_service_account_deleted("prod", "svc_9", T)
