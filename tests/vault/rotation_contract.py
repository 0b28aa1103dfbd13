"""Storage contract of :class:`~keyguard.storage.ports.RotationStore` (rotation records, leases,
admin keys, service-account links). Mixed into :class:`vault.contract.StoreContract`, so every
backend runs it; it uses the same ``store`` / ``second_store`` fixtures."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keyguard.domain.records import UpstreamCredential
from keyguard.domain.rotation import (
    AdminKeyRecord,
    RotationState,
    ServiceAccountLink,
    UpstreamRotation,
)
from keyguard.errors import AlreadyExists, ConcurrentUpdate, KeyNotFound

T = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
S = RotationState


def rotation(state: RotationState = S.CREATING, rid: str = "r1", **kw: Any) -> UpstreamRotation:
    return UpstreamRotation(
        upstream="prod", rotation_id=rid, state=state, project_id="proj_x",
        account_name=f"keyguard-prod-{rid}", started_at=T, updated_at=T,
        grace=timedelta(hours=1), max_grace=timedelta(days=1), **kw,
    )


class RotationStoreContract:
    """RotationStore behaviour every backend must show."""

    def _with_upstream(self, store: Any) -> None:
        store.add_upstream(UpstreamCredential(name="prod", created_at=T))

    def test_rotation_compare_and_set(self, store: Any) -> None:
        self._with_upstream(store)
        g = store.generation()
        assert store.get_rotation("prod") is None
        first = rotation(old_version=1)
        store.save_rotation(first, None)
        assert store.get_rotation("prod") == first
        with pytest.raises(ConcurrentUpdate):
            store.save_rotation(rotation(rid="r2"), None)  # one in flight per upstream
        created = first.advance(S.CREATED, T + timedelta(seconds=1), new_version=2,
                                new_account_id="svc_acct_1", old_last_used=T)
        with pytest.raises(ConcurrentUpdate):
            store.save_rotation(created, ("r1", S.TESTED))  # stale expectation
        store.save_rotation(created, ("r1", S.CREATING))
        assert store.get_rotation("prod") == created
        done = created.advance(S.RETIRED, T + timedelta(seconds=2), finished_at=T)
        store.save_rotation(done, ("r1", S.CREATED))
        store.save_rotation(rotation(rid="r2"), None)  # a terminal row may be replaced
        assert [r.rotation_id for r in store.list_rotations()] == ["r2"]
        assert store.generation() == g  # rotation bookkeeping invalidates no cache

    def test_rotation_needs_upstream_and_goes_with_it(self, store: Any) -> None:
        with pytest.raises(KeyNotFound):
            store.save_rotation(rotation(), None)
        self._with_upstream(store)
        store.save_rotation(rotation(), None)
        store.put_admin_key(AdminKeyRecord("prod", "proj_x", "sha256:00", T), b"sealed")
        store.delete_upstream("prod")
        assert store.get_rotation("prod") is None
        assert store.get_admin_key("prod") is None

    def test_leases(self, store: Any) -> None:
        later = T + timedelta(minutes=5)
        assert store.get_lease("rotation:prod") is None
        assert store.acquire_lease("rotation:prod", "a", T, later)
        assert not store.acquire_lease("rotation:prod", "b", T + timedelta(minutes=1), later)
        assert store.acquire_lease("rotation:prod", "a", T, later + timedelta(minutes=5))  # renew
        lease = store.get_lease("rotation:prod")
        assert (lease.holder, lease.expires_at) == ("a", later + timedelta(minutes=5))
        assert store.acquire_lease("rotation:prod", "b", later + timedelta(minutes=5),
                                   later + timedelta(minutes=9))  # expired: taken over
        assert not store.release_lease("rotation:prod", "a")
        assert store.release_lease("rotation:prod", "b")
        assert store.get_lease("rotation:prod") is None

    def test_admin_keys(self, store: Any) -> None:
        record = AdminKeyRecord("prod", "proj_x", "sha256:0000000000000000", T)
        with pytest.raises(KeyNotFound):
            store.put_admin_key(record, b"sealed")
        self._with_upstream(store)
        g = store.generation()
        store.put_admin_key(record, b"sealed-1")
        assert store.get_admin_key("prod") == (record, b"sealed-1")
        newer = AdminKeyRecord("prod", "proj_y", "sha256:1111111111111111", T)
        store.put_admin_key(newer, b"sealed-2")
        assert store.get_admin_key("prod") == (newer, b"sealed-2")
        assert store.list_admin_keys() == [newer]
        assert store.delete_admin_key("prod") and not store.delete_admin_key("prod")
        assert store.get_admin_key("prod") is None
        assert store.generation() == g

    def test_service_account_links(self, store: Any) -> None:
        link = ServiceAccountLink("prod", 1, "proj_x", "svc_acct_1", "key_1", T)
        store.add_service_account(link)  # no upstream needed: links outlive credentials
        with pytest.raises(AlreadyExists):
            store.add_service_account(link)
        store.add_service_account(ServiceAccountLink("prod", 2, "proj_x", "svc_acct_2", None, T))
        store.add_service_account(ServiceAccountLink("other", 1, "proj_x", "svc_acct_3", None, T))
        assert [s.account_id for s in store.list_service_accounts("prod")] == [
            "svc_acct_1", "svc_acct_2"]
        assert len(store.list_service_accounts()) == 3
        store.mark_service_account_deleted("prod", "svc_acct_1", T + timedelta(hours=1))
        store.mark_service_account_deleted("prod", "svc_acct_1", T + timedelta(hours=2))
        first = store.list_service_accounts("prod")[0]
        assert first.deleted_at == T + timedelta(hours=1) and first.api_key_id == "key_1"
        with pytest.raises(KeyNotFound):
            store.mark_service_account_deleted("prod", "svc_acct_9", T)

    def test_one_lease_holder_across_connections(self, store: Any, second_store: Any) -> None:
        wins: list[str] = []
        barrier = threading.Barrier(2)

        def take(s: Any, who: str) -> None:
            barrier.wait()
            if s.acquire_lease("scheduler", who, T, T + timedelta(minutes=1)):
                wins.append(who)

        threads = [threading.Thread(target=take, args=a)
                   for a in ((store, "a"), (second_store, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
