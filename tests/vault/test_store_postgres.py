"""The PostgreSQL backend: the shared contract, plus what is particular to PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from keyguard.errors import ConfigError, StorageError, StorageUnavailable
from keyguard.storage import open_store
from keyguard.storage import sqlite_schema as lite
from keyguard.storage.postgres import PostgresStore
from keyguard.storage.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from vault.contract import StoreContract, T, cred, digest, vkey
from vault.pg_fixtures import admin, pg_schema, pg_store_url, pg_url

__all__ = ["pg_schema", "pg_store_url", "pg_url"]  # fixtures: pytest finds them here


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg_store_url: str) -> Iterator[PostgresStore]:
        s = PostgresStore(pg_store_url)
        yield s
        s.close()

    @pytest.fixture
    def second_store(self, pg_store_url: str) -> Iterator[PostgresStore]:
        s = PostgresStore(pg_store_url)  # another pool: other connections, like another process
        yield s
        s.close()


def _version(schema: str) -> int:
    with admin() as conn:
        q = sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema))
        row = conn.execute(q).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_migrations_mirror_sqlite_steps() -> None:
    # a new SQLite step without its PostgreSQL twin must fail here, not in production
    assert len(MIGRATIONS) == len(lite.MIGRATIONS)
    assert SCHEMA_VERSION == lite.SCHEMA_VERSION


def test_schema_option_creates_the_schema_and_migrates_once(pg_url: str, pg_schema: str) -> None:
    fresh = pg_schema + "_opt"
    try:
        s = PostgresStore(pg_url, schema=fresh)
        s.add_upstream(cred())
        s.close()
        assert _version(fresh) == SCHEMA_VERSION
        s2 = PostgresStore(f"{pg_url}?schema={fresh}")  # the URL form; data still there
        assert s2.get_upstream("prod") is not None
        assert "kg_test" in repr(s2)
        s2.close()
    finally:
        with admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(fresh)))


def test_search_path_in_the_url_is_honoured(pg_store_url: str, pg_schema: str) -> None:
    PostgresStore(pg_store_url).close()
    assert _version(pg_schema) == SCHEMA_VERSION


def test_newer_schema_is_refused(pg_store_url: str, pg_schema: str) -> None:
    PostgresStore(pg_store_url).close()
    with admin() as conn:
        conn.execute(
            sql.SQL("UPDATE {}.schema_version SET version = %s").format(sql.Identifier(pg_schema)),
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(StorageError, match="newer than this keyguard"):
        PostgresStore(pg_store_url)


def test_bad_schema_name_is_a_config_error(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresStore(pg_url, schema="Robert'); DROP TABLE x;--")


def test_unreachable_server_never_shows_the_password() -> None:
    password = "pw-" + "s3cr3t-" * 3
    url = f"postgresql://keyguard:{password}@127.0.0.1:1/test"
    with pytest.raises(StorageUnavailable) as info:
        PostgresStore(url, connect_timeout=1)
    assert password not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.Error)


def test_malformed_url_never_shows_the_password() -> None:
    password = "pw-" + "hunter2-" * 3
    for url in (
        f"postgresql://u:{password}@[::1/test",  # libpq quotes the whole URI back
        f"postgresql://u@h/test?password={password}&bogus=1",
        f"host=h password={password} nonsense",
    ):
        with pytest.raises(ConfigError) as info:
            PostgresStore(url)
        assert password not in str(info.value), url


def test_repr_and_url_hide_the_password(pg_store_url: str) -> None:
    url = pg_store_url.replace("postgres@", "postgres:pw-not-needed-by-trust@", 1)
    s = PostgresStore(url)
    assert "pw-not-needed" not in repr(s) and "pw-not-needed" not in s.url
    s.close()


def test_revocation_trigger_guards_the_table(pg_store_url: str) -> None:
    s = PostgresStore(pg_store_url)
    s.add_virtual_key(vkey(), digest())
    s.revoke_virtual_key("abcdefghijkl", T)
    with pytest.raises(StorageError, match="permanent"), s.transaction():
        s._run("UPDATE virtual_keys SET revoked_at = NULL")
    assert s.get_virtual_key("abcdefghijkl").revoked_at == T  # type: ignore[union-attr]
    s.close()


def test_writer_waiting_for_the_lock_is_busy(pg_store_url: str) -> None:
    s = PostgresStore(pg_store_url, lock_timeout_ms=100)
    other = PostgresStore(pg_store_url)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other.transaction():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(5)
        with pytest.raises(StorageUnavailable, match="busy"):
            s.set_meta("x", b"1")
        assert s.generation() >= 0  # plain reads never wait for the writer
    finally:
        release.set()
        holder.join()
    s.set_meta("x", b"1")
    s.close()
    other.close()


def test_transactions_belong_to_their_thread(pg_store_url: str) -> None:
    s = PostgresStore(pg_store_url)
    seen: list[bytes | None] = []
    with s.transaction():
        s.set_meta("t", b"1")
        reader = threading.Thread(target=lambda: seen.append(s.get_meta("t")))
        reader.start()
        reader.join(5)
        assert s.get_meta("t") == b"1"  # this thread reads its own write
    assert seen == [None]  # the other thread did not see (or wait for) the open transaction
    assert s.get_meta("t") == b"1"
    s.close()


def test_dead_pooled_connections_are_replaced(pg_url: str, pg_schema: str) -> None:
    app = f"kg-{pg_schema}"
    s = PostgresStore(f"{pg_url}?application_name={app}", schema=pg_schema)
    s.set_meta("a", b"1")
    with admin() as conn:  # a server restart, as the pool sees it
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
    time.sleep(0.1)
    assert s.get_meta("a") == b"1"
    s.set_meta("b", b"2")
    s.close()


def test_open_store_dispatches_postgres_urls(pg_url: str, pg_schema: str) -> None:
    for url in (f"{pg_url}?schema={pg_schema}", f"postgres://{pg_url.split('://', 1)[1]}"):
        s = open_store(url if "schema" in url else f"{url}?schema={pg_schema}")
        assert isinstance(s, PostgresStore)
        s.close()


def test_spend_store_adds_increments(pg_store_url: str) -> None:
    from keyguard.storage.postgres_usage import PgSpendStore

    s, other = PostgresStore(pg_store_url), PostgresStore(pg_store_url)
    g = s.generation()
    PgSpendStore(s).add_spend({("k1", "m2031-05"): 5, ("k2", "d1"): 1}, T)
    PgSpendStore(other).add_spend({("k1", "m2031-05"): 7}, T)
    assert PgSpendStore(s).load_spend() == {("k1", "m2031-05"): 12, ("k2", "d1"): 1}
    assert PgSpendStore(s).spend_of("k1") == {"m2031-05": 12}
    assert s.generation() == g
    s.close()
    other.close()


def test_libpq_environment_is_honoured(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={pg_schema}")
    PostgresStore(pg_url).close()  # the bare URL of the docs, schema chosen by PGOPTIONS
    assert _version(pg_schema) == SCHEMA_VERSION


def test_many_threads_share_one_store(pg_store_url: str) -> None:
    from keyguard.domain.audit import GENESIS, AuditHead
    from vault.contract import arec

    s = PostgresStore(pg_store_url, pool_size=3)  # fewer connections than threads
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                with s.transaction():
                    head = s.audit_head()
                    seq = head.seq + 1 if head else 1
                    r = arec(seq, head.hash if head else GENESIS)
                    s.append_audit([r.row()], AuditHead(seq, r.hash, "m"))
                s.generation()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.seq for r in s.list_audit()] == list(range(1, 61))
    s.close()


def test_version_4_schema_upgrades_admin_tokens(pg_url: str, pg_schema: str) -> None:
    """A schema as keyguard left it before admin tokens had expiry and last use (steps 1-4
    exactly, one token row written the way version 4 wrote it) upgrades in place."""
    import os
    from datetime import datetime, timedelta, timezone

    from vault.pg_fixtures import with_search_path

    url = with_search_path(pg_url, pg_schema)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (4)")
        for step in MIGRATIONS[:4]:
            for statement in step:
                conn.execute(statement)  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO admin_tokens (token_id, name, scope, digest, created_at, created_by,"
            " revoked_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                "tok000000001",
                "old",
                "admin",
                os.urandom(32),
                "2030-01-02T03:04:05+00:00",
                "u",
                None,
            ),
        )
    s = PostgresStore(url)
    try:
        assert s.migrated_from == 4
        found = s.get_admin_token("tok000000001")
        assert found is not None
        assert found[0].name == "old"
        assert found[0].expires_at is None and found[0].last_used_at is None
        at = datetime(2030, 1, 3, tzinfo=timezone.utc)
        assert s.touch_admin_token("tok000000001", at, unless_after=at - timedelta(minutes=1))
        assert s.list_admin_tokens()[0].last_used_at == at
    finally:
        s.close()
    assert _version(pg_schema) == SCHEMA_VERSION


def test_version_5_schema_upgrades_upstream_versions(pg_url: str, pg_schema: str) -> None:
    """A schema as keyguard left it before versions could be marked compromised (steps 1-5
    exactly, a credential and two versions written the way version 5 wrote them) upgrades in
    place."""
    import os
    from datetime import datetime, timezone

    from vault.pg_fixtures import with_search_path

    url = with_search_path(pg_url, pg_schema)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (5)")
        for step in MIGRATIONS[:5]:
            for statement in step:
                conn.execute(statement)  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO upstreams (name, provider, base_url, allow_insecure_loopback,"
            " created_at) VALUES (%s, %s, %s, %s, %s)",
            ("prod", "openai", "https://api.openai.com/v1", 0, "2030-01-02T03:04:05+00:00"),
        )
        for n, label in ((1, "PREVIOUS"), (2, "CURRENT")):
            conn.execute(
                "INSERT INTO upstream_versions (upstream, version, label, fingerprint, sealed,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    "prod",
                    n,
                    label,
                    f"sha256:{n:016x}",
                    os.urandom(40),
                    "2030-01-02T03:04:05+00:00",
                ),
            )
    s = PostgresStore(url)
    try:
        assert s.migrated_from == 5
        old = s.get_upstream("prod")
        assert old is not None
        assert [(v.version, v.compromised_at) for v in old.versions] == [(1, None), (2, None)]
        at = datetime(2030, 1, 3, tzinfo=timezone.utc)
        marked = s.mark_upstream_compromised("prod", 2, at, "leaked", "scan")
        assert marked.compromised_at == at and marked.label is not None
        assert s.list_upstreams()[0].versions[1] == marked
    finally:
        s.close()
    assert _version(pg_schema) == SCHEMA_VERSION
