"""Admin tokens through the Vault facade over real SQLite, with a hand-moved clock: expiry is
refused like revocation (at the time given), tokens without expiry last, ``last_used_at`` is
recorded at most once a minute, and vaults from before expiry existed upgrade in place."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from keyguard.crypto.master import MasterKey
from keyguard.domain.admin_tokens import (
    LAST_USED_INTERVAL,
    AdminToken,
    check_admin_token_state,
    generate_admin_token,
    last_used_due,
    parse_admin_token,
)
from keyguard.domain.keys import checksum
from keyguard.errors import ConfigError, StorageUnavailable, Unauthenticated
from keyguard.storage.sqlite import SqliteStore
from keyguard.storage.sqlite_schema import SCHEMA_VERSION
from keyguard.vault import Vault
from keyguard.vault.views import admin_token_dict
from vault.helpers import Clock


def refusal(vault: Vault, token: str, **kw: object) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        vault.authenticate_admin(token, **kw)  # type: ignore[arg-type]
    assert token not in str(info.value) and token[4:40] not in str(info.value)
    return info.value


def writes_during(store: SqliteStore, action: object) -> list[str]:
    """The data-changing SQL statements the store runs while ``action()`` runs."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        action()  # type: ignore[operator]
    finally:
        store._conn.set_trace_callback(None)
    verbs = ("INSERT", "UPDATE", "DELETE", "REPLACE")
    return [s for s in seen if s.lstrip().upper().startswith(verbs)]


def test_token_without_expiry_keeps_working(vault: Vault, clock: Clock) -> None:
    record, secret = vault.create_admin_token("ops", "admin")
    assert record.expires_at is None
    clock.advance(days=3650)
    assert vault.authenticate_admin(secret.reveal()).token_id == record.token_id


def test_expired_token_is_refused_like_a_revoked_one(vault: Vault, clock: Clock) -> None:
    start = clock()
    record, secret = vault.create_admin_token(
        "ci", "admin", expires_at=start + timedelta(days=30), actor="user:tester"
    )
    token = secret.reveal()
    assert record.expires_at == start + timedelta(days=30)
    clock.advance(days=30, seconds=-1)
    assert vault.authenticate_admin(token).token_id == record.token_id
    clock.advance(seconds=1)  # at expires_at: refused
    err = refusal(vault, token)
    assert err.code == "expired_admin_token" and str(err) == "admin token expired"
    # the state is told only to a caller with the right secret
    other_secret = parse_admin_token(generate_admin_token()[1]).secret
    body = record.token_id + other_secret
    forged = "kga_" + body + checksum(body)  # well-formed, right id, wrong secret
    assert refusal(vault, forged).code == "invalid_admin_token"
    # revoked wins over expired; both stay refused
    vault.revoke_admin_token(record.token_id)
    assert refusal(vault, token).code == "revoked_admin_token"


def test_now_is_passed_in(vault: Vault, clock: Clock) -> None:
    _, secret = vault.create_admin_token("ci", "read", expires_at=clock() + timedelta(hours=1))
    token = secret.reveal()
    later = clock() + timedelta(hours=2)
    assert refusal(vault, token, now=later).code == "expired_admin_token"
    assert vault.authenticate_admin(token, now=clock()).name == "ci"


def test_expiry_must_be_future_and_aware(vault: Vault, clock: Clock) -> None:
    with pytest.raises(ConfigError, match="future"):
        vault.create_admin_token("x", "read", expires_at=clock())
    with pytest.raises(ConfigError, match="timezone"):
        vault.create_admin_token("x", "read", expires_at=datetime(2099, 1, 1))
    assert vault.list_admin_tokens() == []


def test_creation_is_audited_with_the_expiry(vault: Vault, clock: Clock) -> None:
    until = clock() + timedelta(days=7)
    record, secret = vault.create_admin_token("ci", "admin", expires_at=until)
    created = [r for r in vault.audit.list() if r.action == "admin_token.create"]
    assert created[-1].subject == record.token_id
    assert created[-1].details["expires_at"] == until.isoformat(timespec="seconds")
    assert secret.reveal() not in repr(created)


def test_last_used_is_recorded_at_most_once_a_minute(
    vault: Vault, clock: Clock, store: SqliteStore
) -> None:
    record, secret = vault.create_admin_token("ops", "admin")
    token = secret.reveal()
    # a lookup that is not a use (the scanner's) records nothing
    vault.authenticate_admin(token)
    assert vault.list_admin_tokens()[0].last_used_at is None

    first = clock()
    written = writes_during(store, lambda: vault.authenticate_admin(token, record_use=True))
    assert len(written) == 1 and "admin_tokens" in written[0]
    assert vault.list_admin_tokens()[0].last_used_at == first

    for _ in range(5):  # within the minute: plain reads, the time stays
        clock.advance(seconds=10)
        used = vault.authenticate_admin(token, record_use=True)
        assert used.last_used_at == first
    assert writes_during(store, lambda: vault.authenticate_admin(token, record_use=True)) == []
    assert vault.list_admin_tokens()[0].last_used_at == first

    clock.advance(seconds=10)  # a minute after the last write: written again
    assert clock() - first == LAST_USED_INTERVAL
    assert vault.authenticate_admin(token, record_use=True).last_used_at == clock()
    assert vault.list_admin_tokens()[0].last_used_at == clock()


def test_refused_tokens_are_not_recorded_as_used(vault: Vault, clock: Clock) -> None:
    record, secret = vault.create_admin_token("ci", "admin", expires_at=clock() + timedelta(1))
    clock.advance(days=2)
    refusal(vault, secret.reveal(), record_use=True)
    other, other_secret = vault.create_admin_token("gone", "read")
    vault.revoke_admin_token(other.token_id)
    refusal(vault, other_secret.reveal(), record_use=True)
    assert [t.last_used_at for t in vault.list_admin_tokens()] == [None, None]


def test_a_failed_last_used_write_does_not_refuse_a_valid_token(
    vault: Vault, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = vault.create_admin_token("ops", "admin")

    def busy(*args: object, **kw: object) -> bool:
        raise StorageUnavailable("database is busy")

    monkeypatch.setattr(store, "touch_admin_token", busy)
    assert vault.authenticate_admin(secret.reveal(), record_use=True).last_used_at is None


def test_json_view_shows_expiry_last_use_and_status(vault: Vault, clock: Clock) -> None:
    until = clock() + timedelta(hours=1)
    _, secret = vault.create_admin_token("ci", "admin", expires_at=until)
    used = vault.authenticate_admin(secret.reveal(), record_use=True)
    view = admin_token_dict(vault.list_admin_tokens()[0], clock())
    assert view["expires_at"] == until.isoformat(timespec="seconds")
    assert view["last_used_at"] == clock().isoformat(timespec="seconds")
    assert view["status"] == "active" and used.last_used_at == clock()
    assert admin_token_dict(vault.list_admin_tokens()[0], until)["status"] == "expired"
    assert secret.reveal() not in repr(view)


def test_domain_state_check_is_pure(clock: Clock) -> None:
    now = clock()
    token = AdminToken("tok000000001", "x", "read", now, expires_at=now)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated) as info:
        check_admin_token_state(token, now=now)
    assert info.value.code == "expired_admin_token"
    check_admin_token_state(token, now=now - timedelta(microseconds=1))
    assert last_used_due(token, now)
    seen = AdminToken("tok000000001", "x", "read", now, last_used_at=now)  # type: ignore[arg-type]
    assert not last_used_due(seen, now + timedelta(seconds=59))
    assert not last_used_due(seen, now - timedelta(hours=1))  # a clock that went back
    assert last_used_due(seen, now + timedelta(seconds=60))


def test_vault_from_before_expiry_upgrades_and_its_tokens_still_work(
    db_path: Path, master: MasterKey, clock: Clock
) -> None:
    """A vault with a token, taken back to schema version 4 (the two columns dropped), opens,
    migrates, and the token authenticates with no expiry."""
    v = Vault.create(SqliteStore(db_path), master, clock=clock)
    record, secret = v.create_admin_token("old", "admin")
    v.close()
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE admin_tokens DROP COLUMN expires_at")
    conn.execute("ALTER TABLE admin_tokens DROP COLUMN last_used_at")
    for column in ("compromised_at", "compromised_reason", "compromised_source"):  # step 6
        conn.execute(f"ALTER TABLE upstream_versions DROP COLUMN {column}")
    conn.execute("UPDATE schema_version SET version = 4")
    conn.commit()
    conn.close()

    v = Vault.open(SqliteStore(db_path), master, clock=clock)
    try:
        clock.advance(days=400)
        found = v.authenticate_admin(secret.reveal(), record_use=True)
        assert found.token_id == record.token_id and found.expires_at is None
        assert v.list_admin_tokens()[0].last_used_at == clock()
    finally:
        v.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
