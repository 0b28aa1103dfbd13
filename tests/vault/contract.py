"""The storage contract: every VaultStore backend must pass these tests.

Use it by subclassing with a ``store`` fixture returning a fresh, empty backend::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self): ...

and, for the cross-connection tests, a ``second_store`` fixture opening the same database again
(or skip them). Nothing here knows which backend it runs on.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keyguard.domain.audit import GENESIS, AuditHead, AuditRecord
from keyguard.domain.records import (
    KeySecretHash,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    KeyguardError,
    KeyNotFound,
    StorageError,
)
from keyguard.storage.ports import KekRecord, PendingAudit
from vault.admin_token_contract import AdminTokenStoreContract
from vault.rotation_contract import RotationStoreContract

T = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def cred(name: str = "prod", **kw: Any) -> UpstreamCredential:
    return UpstreamCredential(name=name, created_at=T, **kw)


def version(n: int, label: Label | None = None, name: str = "prod") -> UpstreamVersion:
    return UpstreamVersion(name, n, f"sha256:{n:016x}", T + timedelta(seconds=n), label)


def vkey(key_id: str = "abcdefghijkl", **kw: Any) -> VirtualKey:
    return VirtualKey(key_id=key_id, name="app", upstream="prod", created_at=T, **kw)


def digest(key_id: str = "abcdefghijkl", b: int = 1) -> KeySecretHash:
    return KeySecretHash(key_id, bytes([b]) * 32, T)


def arec(seq: int, prev: str = GENESIS) -> AuditRecord:
    return AuditRecord(
        seq, T, "act", "me", "subj", "cli", "ok", {"n": seq, "x": [1, "a"]}, prev, f"{seq:064x}"
    )


class StoreContract(RotationStoreContract, AdminTokenStoreContract):
    """Backend-agnostic tests; subclasses provide ``store`` (and ``second_store``)."""

    # -- metadata, KEKs, generation ----------------------------------------------------

    def test_meta_roundtrip_and_overwrite(self, store: Any) -> None:
        assert store.get_meta("x") is None
        store.set_meta("x", b"\x00\x01")
        store.set_meta("x", b"\x02")
        assert store.get_meta("x") == b"\x02"

    def test_keks(self, store: Any) -> None:
        store.add_kek(KekRecord(1, b"w1", T))
        store.add_kek(KekRecord(2, b"w2", T))
        with pytest.raises(AlreadyExists):
            store.add_kek(KekRecord(2, b"w3", T))
        store.replace_kek(1, b"w1b")
        assert [(k.kek_id, k.wrapped) for k in store.list_keks()] == [(1, b"w1b"), (2, b"w2")]
        with pytest.raises(KeyNotFound):
            store.replace_kek(9, b"w")

    def test_generation_moves_on_key_and_upstream_writes_only(self, store: Any) -> None:
        g0 = store.generation()
        store.add_upstream(cred())
        g1 = store.generation()
        store.add_virtual_key(vkey(), digest())
        g2 = store.generation()
        store.revoke_virtual_key("abcdefghijkl", T)
        g3 = store.generation()
        assert g0 < g1 < g2 < g3
        store.touch_virtual_keys({"abcdefghijkl": T})
        store.append_audit([arec(1).row()], AuditHead(1, arec(1).hash, "m"))
        assert store.generation() == g3

    # -- transactions ------------------------------------------------------------------

    def test_transaction_is_atomic(self, store: Any) -> None:
        g = store.generation()
        with pytest.raises(RuntimeError), store.transaction():
            store.add_upstream(cred())
            store.add_upstream_version(version(1, Label.CURRENT), b"sealed")
            store.set_meta("y", b"1")
            raise RuntimeError("boom")
        assert store.get_upstream("prod") is None
        assert store.get_meta("y") is None
        assert store.generation() == g

    def test_nested_transactions_join(self, store: Any) -> None:
        with pytest.raises(RuntimeError), store.transaction():
            with store.transaction():
                store.set_meta("a", b"1")
            raise RuntimeError("outer fails")
        assert store.get_meta("a") is None

    def test_failed_domain_check_inside_transaction_rolls_back(self, store: Any) -> None:
        store.add_upstream(cred())
        with pytest.raises(AlreadyExists), store.transaction():
            store.set_meta("b", b"1")
            store.add_upstream(cred())
        assert store.get_meta("b") is None

    # -- upstreams ---------------------------------------------------------------------

    def test_upstream_roundtrip(self, store: Any) -> None:
        c = cred(
            organization="org-1",
            project="proj-1",
            allow_insecure_loopback=True,
            base_url="http://127.0.0.1:9",
            max_age=timedelta(days=90),
            last_rotated_at=T,
        )
        store.add_upstream(c)
        got = store.get_upstream("prod")
        assert got == c
        with pytest.raises(AlreadyExists):
            store.add_upstream(cred())
        assert store.get_upstream("nope") is None

    def test_versions_and_labels(self, store: Any) -> None:
        store.add_upstream(cred())
        store.add_upstream_version(version(1, Label.CURRENT), b"s1")
        store.add_upstream_version(version(2, Label.PENDING), b"s2")
        got = store.get_upstream("prod")
        assert [(v.version, v.label) for v in got.versions] == [
            (1, Label.CURRENT),
            (2, Label.PENDING),
        ]
        assert got.last_rotated_at == version(2).created_at
        assert store.get_sealed_upstream("prod", 2) == b"s2"
        with pytest.raises(KeyNotFound):
            store.get_sealed_upstream("prod", 3)

    def test_at_most_one_version_per_label(self, store: Any) -> None:
        store.add_upstream(cred())
        store.add_upstream_version(version(1, Label.CURRENT), b"s1")
        with pytest.raises(KeyguardError):
            store.add_upstream_version(version(2, Label.CURRENT), b"s2")
        with pytest.raises(KeyguardError):
            store.add_upstream_version(version(1), b"dup")
        store.add_upstream_version(version(2), b"s2")
        store.set_upstream_labels("prod", {2: Label.CURRENT, 1: Label.PREVIOUS})
        labels = {v.version: v.label for v in store.get_upstream("prod").versions}
        assert labels == {1: Label.PREVIOUS, 2: Label.CURRENT}
        store.add_upstream_version(version(3), b"s3")
        store.set_upstream_labels("prod", {3: Label.PREVIOUS})  # taken from version 1
        labels = {v.version: v.label for v in store.get_upstream("prod").versions}
        assert labels == {1: None, 2: Label.CURRENT, 3: Label.PREVIOUS}
        with pytest.raises(KeyNotFound):
            store.set_upstream_labels("prod", {7: Label.PENDING})
        with pytest.raises(ValueError):
            store.set_upstream_labels("prod", {1: Label.PENDING, 2: Label.PENDING})

    def test_version_needs_existing_upstream(self, store: Any) -> None:
        with pytest.raises(KeyNotFound):
            store.add_upstream_version(version(1, Label.CURRENT), b"s")

    def test_delete_upstream_removes_versions(self, store: Any) -> None:
        store.add_upstream(cred())
        store.add_upstream_version(version(1, Label.CURRENT), b"s1")
        assert store.delete_upstream("prod") is True
        assert store.delete_upstream("prod") is False
        assert list(store.iter_sealed_upstreams()) == []
        store.add_upstream(cred())  # the name is free again
        assert store.get_upstream("prod").versions == ()

    def test_sealed_listing_replace_and_fingerprint_lookup(self, store: Any) -> None:
        store.add_upstream(cred("a"))
        store.add_upstream(cred("b"))
        store.add_upstream_version(version(1, Label.CURRENT, "a"), b"a1")
        store.add_upstream_version(version(1, Label.CURRENT, "b"), b"b1")
        store.replace_sealed_upstream("b", 1, b"b1x")
        rows = [(r.upstream, r.version, r.sealed) for r in store.iter_sealed_upstreams()]
        assert rows == [("a", 1, b"a1"), ("b", 1, b"b1x")]
        found = store.find_upstream_versions(version(1).fingerprint)
        assert [(v.upstream, v.version) for v in found] == [("a", 1), ("b", 1)]
        assert store.find_upstream_versions("sha256:none") == []
        assert [c.name for c in store.list_upstreams()] == ["a", "b"]

    def test_mark_upstream_compromised_roundtrip(self, store: Any) -> None:
        store.add_upstream(cred())
        store.add_upstream_version(version(1, Label.CURRENT), b"s1")
        store.add_upstream_version(version(2, Label.PENDING), b"s2")
        assert not store.get_upstream("prod").versions[0].compromised
        g = store.generation()
        at = T + timedelta(hours=1)
        marked = store.mark_upstream_compromised("prod", 1, at, "found in a.py:3", "scan")
        assert marked.compromised_at == at
        assert (marked.compromised_reason, marked.compromised_source) == ("found in a.py:3", "scan")
        assert marked.label is Label.CURRENT and marked.fingerprint == version(1).fingerprint
        assert store.generation() > g
        got = store.get_upstream("prod")
        assert got.versions[0] == marked
        assert got.versions[1].compromised_at is None
        assert [c.versions for c in store.list_upstreams()] == [got.versions]
        assert store.find_upstream_versions(version(1).fingerprint) == [marked]
        # idempotent: the first time, reason and source are kept; nothing changes
        g = store.generation()
        again = store.mark_upstream_compromised("prod", 1, at + timedelta(days=1), "other", "cli")
        assert again == marked and store.generation() == g
        # labels move, the mark stays with the version
        store.set_upstream_labels("prod", {2: Label.CURRENT, 1: Label.PREVIOUS})
        moved = store.get_upstream("prod").versions[0]
        assert moved.label is Label.PREVIOUS and moved.compromised_at == at
        with pytest.raises(KeyNotFound):
            store.mark_upstream_compromised("prod", 9, at, "r", "s")
        with pytest.raises(KeyNotFound):
            store.mark_upstream_compromised("nope", 1, at, "r", "s")

    def test_mark_upstream_compromised_rolls_back_with_its_transaction(self, store: Any) -> None:
        store.add_upstream(cred())
        store.add_upstream_version(version(1, Label.CURRENT), b"s1")
        with pytest.raises(RuntimeError), store.transaction():
            store.mark_upstream_compromised("prod", 1, T, "leak", "scan")
            raise RuntimeError("boom")
        assert not store.get_upstream("prod").versions[0].compromised

    # -- virtual keys ------------------------------------------------------------------

    def test_virtual_key_roundtrip(self, store: Any) -> None:
        k = vkey(
            owner="alice",
            allowed_models=("gpt-4o", "o1-*"),
            allowed_endpoints=("/v1/files*",),
            allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
            expires_at=T + timedelta(days=1),
            rpm=60,
            tpm=1000,
            max_concurrency=4,
            budget_usd=12.5,
            max_age=timedelta(days=30),
        )
        store.add_virtual_key(k, digest())
        assert store.get_virtual_key(k.key_id) == k
        assert store.list_virtual_keys() == [k]
        with pytest.raises(AlreadyExists):
            store.add_virtual_key(k, digest(b=2))
        assert store.get_virtual_key("zzzzzzzzzzzz") is None

    def test_revocation_is_permanent_and_idempotent(self, store: Any) -> None:
        store.add_virtual_key(vkey(), digest())
        first = store.revoke_virtual_key("abcdefghijkl", T)
        again = store.revoke_virtual_key("abcdefghijkl", T + timedelta(hours=1))
        assert first.revoked_at == again.revoked_at == T
        with pytest.raises(KeyNotFound):
            store.revoke_virtual_key("zzzzzzzzzzzz", T)

    def test_touch_only_moves_forward(self, store: Any) -> None:
        store.add_virtual_key(vkey(), digest())
        store.touch_virtual_keys({"abcdefghijkl": T + timedelta(hours=2)})
        store.touch_virtual_keys({"abcdefghijkl": T + timedelta(hours=1), "unknown00000": T})
        assert store.get_virtual_key("abcdefghijkl").last_used_at == T + timedelta(hours=2)

    def test_key_secrets_table(self, store: Any) -> None:
        store.add_virtual_key(vkey(), digest(b=1))
        store.add_key_secret(digest(b=2))
        store.set_key_secret_valid_until("abcdefghijkl", bytes([1]) * 32, T + timedelta(hours=1))
        rows = {s.digest[0]: s.valid_until for s in store.list_key_secrets("abcdefghijkl")}
        assert rows == {1: T + timedelta(hours=1), 2: None}
        assert len(store.list_key_secrets()) == 2
        with pytest.raises(KeyNotFound):
            store.add_key_secret(digest("zzzzzzzzzzzz"))
        with pytest.raises(KeyNotFound):
            store.set_key_secret_valid_until("abcdefghijkl", b"\x09" * 32, T)

    # -- audit -------------------------------------------------------------------------

    def test_audit_append_list_head(self, store: Any) -> None:
        assert store.audit_head() is None
        recs = [arec(1), arec(2, arec(1).hash), arec(3, arec(2).hash)]
        store.append_audit([r.row() for r in recs], AuditHead(3, recs[-1].hash, "mac"))
        assert store.list_audit() == recs
        assert store.list_audit(after_seq=1, limit=1) == recs[1:2]
        assert store.audit_head() == AuditHead(3, recs[-1].hash, "mac")

    def test_audit_seq_conflict_is_concurrent_update(self, store: Any) -> None:
        store.append_audit([arec(1).row()], AuditHead(1, arec(1).hash, "m"))
        with pytest.raises(ConcurrentUpdate):
            store.append_audit([arec(1).row()], AuditHead(1, arec(1).hash, "m"))
        assert store.audit_head() == AuditHead(1, arec(1).hash, "m")

    def test_pending_audit(self, store: Any) -> None:
        store.add_pending_audit(PendingAudit(T, "vault.unlock", "bob", "cli", {"reason": "x"}))
        assert store.take_pending_audit() == [
            PendingAudit(T, "vault.unlock", "bob", "cli", {"reason": "x"})
        ]
        assert store.take_pending_audit() == []

    # -- several connections -----------------------------------------------------------

    def test_second_connection_sees_writes_and_generation(
        self, store: Any, second_store: Any
    ) -> None:
        g = second_store.generation()
        store.add_upstream(cred())
        assert second_store.generation() > g
        assert second_store.get_upstream("prod") is not None

    def test_concurrent_audit_appends_from_two_connections(
        self, store: Any, second_store: Any
    ) -> None:
        errors: list[BaseException] = []

        def writer(s: Any, n: int) -> None:
            try:
                for _ in range(n):
                    with s.transaction():
                        head = s.audit_head()
                        seq = head.seq + 1 if head else 1
                        r = arec(seq, head.hash if head else GENESIS)
                        s.append_audit([r.row()], AuditHead(seq, r.hash, "m"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s, 25)) for s in (store, second_store)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [r.seq for r in store.list_audit()] == list(range(1, 51))

    def test_errors_are_storage_errors(self, store: Any) -> None:
        assert issubclass(ConcurrentUpdate, StorageError)
