"""The SQLite backend: the shared contract, plus what is particular to SQLite."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyguard.errors import ConfigError, StorageError, StorageUnavailable
from keyguard.storage import open_store
from keyguard.storage.sqlite import SqliteStore
from keyguard.storage.sqlite_schema import SCHEMA_VERSION
from vault.contract import StoreContract, cred


class TestSqliteFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "c.db")
        yield s
        s.close()

    @pytest.fixture
    def second_store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        s = SqliteStore(tmp_path / "c.db")
        yield s
        s.close()


class TestSqliteMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SqliteStore]:
        s = SqliteStore(":memory:")
        yield s
        s.close()

    @pytest.fixture
    def second_store(self, store: SqliteStore) -> SqliteStore:
        return store  # one in-memory database: the same object plays both roles


def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "p.db")
    conn = s._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    s.close()


def test_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    SqliteStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_reopen_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "r.db")
    s.add_upstream(cred())
    s.close()
    s2 = SqliteStore(tmp_path / "r.db")
    assert s2.get_upstream("prod") is not None
    s2.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer than this keyguard"):
        SqliteStore(path)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(os.urandom(4096))
    path.chmod(0o600)
    with pytest.raises(StorageError) as info:
        SqliteStore(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        SqliteStore(tmp_path / "missing-dir" / "x.db")


def test_busy_database_is_storage_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    s = SqliteStore(path, busy_timeout_ms=50)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable, match="busy"):
            s.set_meta("x", b"1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    s.set_meta("x", b"1")
    s.close()


def test_revocation_trigger_guards_the_table(tmp_path: Path) -> None:
    from vault.contract import T, digest, vkey

    s = SqliteStore(tmp_path / "t.db")
    s.add_virtual_key(vkey(), digest())
    s.revoke_virtual_key("abcdefghijkl", T)
    with pytest.raises(StorageError, match="permanent"):
        s._run("UPDATE virtual_keys SET revoked_at = NULL")
    s.close()


def test_open_store_urls(tmp_path: Path) -> None:
    s = open_store("sqlite:///rel.db", base_dir=tmp_path)
    assert s.path == str(tmp_path / "rel.db")  # type: ignore[attr-defined]
    s.close()
    s = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert s.path == f"{tmp_path}/abs.db"  # type: ignore[attr-defined]
    s.close()
    open_store("sqlite:///:memory:").close()
    with pytest.raises(ConfigError, match="not supported"):
        open_store("mysql://localhost/x")


def _database_at_version_4(path: Path) -> None:
    """A database as keyguard left it before admin tokens had expiry and last use: steps 1-4
    exactly, with one token row written the way version 4 wrote it."""
    from keyguard.storage.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (4)")
    for step in MIGRATIONS[:4]:
        for statement in step:
            conn.execute(statement)
    conn.execute(
        "INSERT INTO admin_tokens (token_id, name, scope, digest, created_at, created_by,"
        " revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("tok000000001", "old", "admin", os.urandom(32), "2030-01-02T03:04:05+00:00", "u", None),
    )
    conn.execute("COMMIT")
    conn.close()
    path.chmod(0o600)


def test_version_4_database_upgrades_admin_tokens(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    path = tmp_path / "v4.db"
    _database_at_version_4(path)
    s = SqliteStore(path)
    found = s.get_admin_token("tok000000001")
    assert found is not None
    old = found[0]
    assert old.name == "old" and old.expires_at is None and old.last_used_at is None
    at = datetime(2030, 1, 3, tzinfo=timezone.utc)
    assert s.touch_admin_token("tok000000001", at, unless_after=at - timedelta(minutes=1))
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    columns = {r[1] for r in conn.execute("PRAGMA table_info(admin_tokens)")}
    assert {"expires_at", "last_used_at"} <= columns
    conn.close()


def _database_at_version_5(path: Path) -> None:
    """A database as keyguard left it before versions could be marked compromised: steps 1-5
    exactly, with one credential and two versions written the way version 5 wrote them."""
    from keyguard.storage.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (5)")
    for step in MIGRATIONS[:5]:
        for statement in step:
            conn.execute(statement)
    conn.execute(
        "INSERT INTO upstreams (name, provider, base_url, allow_insecure_loopback, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        ("prod", "openai", "https://api.openai.com/v1", 0, "2030-01-02T03:04:05+00:00"),
    )
    for n, label in ((1, "PREVIOUS"), (2, "CURRENT")):
        conn.execute(
            "INSERT INTO upstream_versions (upstream, version, label, fingerprint, sealed,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("prod", n, label, f"sha256:{n:016x}", os.urandom(40), "2030-01-02T03:04:05+00:00"),
        )
    conn.execute("COMMIT")
    conn.close()
    path.chmod(0o600)


def test_version_5_database_upgrades_upstream_versions(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    path = tmp_path / "v5.db"
    _database_at_version_5(path)
    s = SqliteStore(path)
    old = s.get_upstream("prod")
    assert old is not None
    assert [(v.version, v.compromised_at) for v in old.versions] == [(1, None), (2, None)]
    at = datetime(2030, 1, 3, tzinfo=timezone.utc)
    marked = s.mark_upstream_compromised("prod", 2, at, "leaked", "scan")
    assert marked.compromised_at == at and marked.fingerprint == "sha256:0000000000000002"
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    columns = {r[1] for r in conn.execute("PRAGMA table_info(upstream_versions)")}
    assert {"compromised_at", "compromised_reason", "compromised_source"} <= columns
    conn.close()
    reopened = SqliteStore(path)  # nothing left to migrate; the mark survived
    got = reopened.get_upstream("prod")
    assert got is not None and got.versions[1].compromised_reason == "leaked"
    reopened.close()
