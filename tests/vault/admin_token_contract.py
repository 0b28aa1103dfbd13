"""Storage contract of :class:`~keyguard.storage.ports.AdminTokenStore` (admin API tokens).
Mixed into :class:`vault.contract.StoreContract`, so every backend runs it."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keyguard.domain.admin_tokens import AdminScope, AdminToken
from keyguard.errors import AlreadyExists, KeyNotFound

T = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def token(token_id: str = "tok000000001", scope: AdminScope = AdminScope.READ) -> AdminToken:
    return AdminToken(token_id, f"ops-{token_id}", scope, T, created_by="user:tester")


class AdminTokenStoreContract:
    """AdminTokenStore behaviour every backend must show."""

    def test_admin_token_roundtrip(self, store: Any) -> None:
        digest = os.urandom(32)
        store.add_admin_token(token(scope=AdminScope.ADMIN), digest)
        found = store.get_admin_token("tok000000001")
        assert found == (token(scope=AdminScope.ADMIN), digest)
        assert store.get_admin_token("tok000000002") is None
        with pytest.raises(AlreadyExists):
            store.add_admin_token(token(), os.urandom(32))

    def test_admin_tokens_list_in_creation_order(self, store: Any) -> None:
        store.add_admin_token(token("tok000000002"), os.urandom(32))
        later = AdminToken("tok000000001", "b", AdminScope.READ, T + timedelta(seconds=1))
        store.add_admin_token(later, os.urandom(32))
        assert [t.token_id for t in store.list_admin_tokens()] == ["tok000000002", "tok000000001"]

    def test_admin_token_revocation_is_permanent_and_idempotent(self, store: Any) -> None:
        store.add_admin_token(token(), os.urandom(32))
        first = store.revoke_admin_token("tok000000001", T + timedelta(hours=1))
        again = store.revoke_admin_token("tok000000001", T + timedelta(hours=2))
        assert first.revoked_at == again.revoked_at == T + timedelta(hours=1)
        assert store.list_admin_tokens()[0].revoked
        with pytest.raises(KeyNotFound):
            store.revoke_admin_token("tok000000009", T)

    def test_admin_token_writes_do_not_bump_generation(self, store: Any) -> None:
        before = store.generation()
        store.add_admin_token(token(), os.urandom(32))
        store.revoke_admin_token("tok000000001", T)
        assert store.generation() == before

    def test_admin_token_expiry_and_last_use_roundtrip(self, store: Any) -> None:
        expiring = AdminToken(
            "tok000000003",
            "ci",
            AdminScope.ADMIN,
            T,
            created_by="user:tester",
            expires_at=T + timedelta(days=30),
        )
        digest = os.urandom(32)
        store.add_admin_token(expiring, digest)
        store.add_admin_token(token(), os.urandom(32))  # no expiry: None both ways
        assert store.get_admin_token("tok000000003") == (expiring, digest)
        assert store.get_admin_token("tok000000001")[0].expires_at is None
        assert store.get_admin_token("tok000000001")[0].last_used_at is None
        listed = {t.token_id: t for t in store.list_admin_tokens()}
        assert listed["tok000000003"].expires_at == T + timedelta(days=30)

    def test_admin_token_touch_writes_once_per_interval_and_never_goes_back(
        self, store: Any, second_store: Any
    ) -> None:
        store.add_admin_token(token(), os.urandom(32))
        minute = timedelta(minutes=1)
        used = T + timedelta(hours=1)
        assert store.touch_admin_token("tok000000001", used, unless_after=used - minute)
        assert store.get_admin_token("tok000000001")[0].last_used_at == used
        # another worker that read the old record a moment later: nothing to write
        later = used + timedelta(seconds=20)
        assert not second_store.touch_admin_token(
            "tok000000001", later, unless_after=later - minute
        )
        assert store.get_admin_token("tok000000001")[0].last_used_at == used
        # an older time never replaces a newer one
        assert not store.touch_admin_token("tok000000001", T, unless_after=T - minute)
        # a minute on, it moves
        again = used + minute
        assert second_store.touch_admin_token("tok000000001", again, unless_after=again - minute)
        assert store.get_admin_token("tok000000001")[0].last_used_at == again
        assert not store.touch_admin_token("tok000000009", again, unless_after=again - minute)

    def test_admin_token_touch_does_not_bump_generation_or_change_state(self, store: Any) -> None:
        store.add_admin_token(token(), os.urandom(32))
        store.revoke_admin_token("tok000000001", T + timedelta(hours=1))
        before = store.generation()
        at = T + timedelta(hours=2)
        store.touch_admin_token("tok000000001", at, unless_after=at - timedelta(minutes=1))
        assert store.generation() == before
        record = store.get_admin_token("tok000000001")[0]
        assert record.revoked_at == T + timedelta(hours=1) and record.last_used_at == at
