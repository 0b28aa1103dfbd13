"""PostgreSQL fixtures for the storage tests: a reachable server, and one fresh schema per test.

Import the fixtures into a test module (``from vault.pg_fixtures import pg_url, pg_schema``).
The server is ``KEYGUARD_TEST_POSTGRES_URL`` (default: the one on loopback, trust auth). When it
cannot be reached the tests are skipped with the reason, except under CI (``CI`` is set), where
they fail loudly: a backend that silently stops being tested is worse than a red build.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

PG_URL = os.environ.get("KEYGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """A plain autocommit connection to the test database (for set-up and inspection)."""
    return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections put ``schema`` first on the search path (libpq options)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(scope="session")
def pg_url() -> str:
    try:
        with admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(f"PostgreSQL is not reachable ({type(exc).__name__}: {exc})".split())
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL backend tests must run")
        pytest.skip(f"{reason}; set KEYGUARD_TEST_POSTGRES_URL or start PostgreSQL")
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A new, empty schema ``kg_test_<random>``, dropped with everything in it afterwards."""
    name = f"kg_test_{secrets.token_hex(6)}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_store_url(pg_url: str, pg_schema: str) -> str:
    """A database URL whose search path is the test's own schema."""
    return with_search_path(pg_url, pg_schema)
