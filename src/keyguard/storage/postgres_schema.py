"""PostgreSQL schema as a list of small upgrade steps; ``MIGRATIONS[i]`` upgrades version i to i+1.

The steps mirror :mod:`keyguard.storage.sqlite_schema` one for one (same version numbers, same
tables and columns), so both backends read and write rows through :mod:`keyguard.storage.codec`:
timestamps stay ISO 8601 UTC text, ``COLLATE "C"`` where we sort or compare them (byte order,
as in SQLite, whatever the database's locale), ``BYTEA`` for blobs, ``DOUBLE PRECISION`` for
SQLite's 8-byte ``REAL``. Audit records keep their exact text so their MACs stay verifiable.

:func:`migrate` runs in one transaction under a cluster-wide advisory lock, so several processes
starting at once never race: the first one migrates, the others wait and find it done. Never edit
a released step: add a new one (and its SQLite twin).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from keyguard.storage.admin_token_schema import (
    ADMIN_TOKENS_V4_POSTGRES,
    ADMIN_TOKENS_V5_POSTGRES,
)
from keyguard.storage.compromise_schema import COMPROMISE_V6_POSTGRES
from keyguard.storage.migrations import upgrade
from keyguard.storage.rotation_schema import ROTATION_V2_POSTGRES
from keyguard.storage.usage_schema import LIMITS_V3_POSTGRES

#: high bits of keyguard's advisory lock keys ("kg"); the low 32 bits: 0 = migrations,
#: otherwise the OID of a vault's ``generation`` table (that vault's write lock)
LOCK_NAMESPACE = 0x6B67 << 32
MIGRATION_LOCK = LOCK_NAMESPACE

_C = 'TEXT COLLATE "C"'

_V1 = [
    f"CREATE TABLE meta (name {_C} PRIMARY KEY, value BYTEA NOT NULL)",
    "CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL)",
    "INSERT INTO generation (id, value) VALUES (1, 0)",
    f"""CREATE TABLE keks (
        kek_id BIGINT PRIMARY KEY,
        wrapped BYTEA NOT NULL,
        created_at {_C} NOT NULL)""",
    f"""CREATE TABLE upstreams (
        name {_C} PRIMARY KEY,
        provider TEXT NOT NULL,
        base_url TEXT NOT NULL,
        organization TEXT,
        project TEXT,
        allow_insecure_loopback INTEGER NOT NULL,
        created_at {_C} NOT NULL,
        last_rotated_at {_C},
        max_age_s DOUBLE PRECISION)""",
    f"""CREATE TABLE upstream_versions (
        upstream {_C} NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
        version BIGINT NOT NULL,
        label TEXT CHECK (label IN ('CURRENT', 'PENDING', 'PREVIOUS')),
        fingerprint TEXT NOT NULL,
        sealed BYTEA NOT NULL,
        created_at {_C} NOT NULL,
        PRIMARY KEY (upstream, version),
        UNIQUE (upstream, label))""",
    "CREATE INDEX upstream_versions_fingerprint ON upstream_versions (fingerprint)",
    f"""CREATE TABLE virtual_keys (
        key_id {_C} PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        upstream TEXT NOT NULL,
        allowed_models TEXT NOT NULL,
        allowed_endpoints TEXT NOT NULL,
        allowed_cidrs TEXT NOT NULL,
        expires_at {_C},
        rpm BIGINT,
        tpm BIGINT,
        max_concurrency BIGINT,
        budget_usd DOUBLE PRECISION,
        budget_period TEXT NOT NULL,
        created_at {_C} NOT NULL,
        last_used_at {_C},
        revoked_at {_C},
        max_age_s DOUBLE PRECISION)""",
    # revocation is permanent: once set, revoked_at can never change again
    """CREATE FUNCTION keyguard_revocation_is_permanent() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
                RAISE EXCEPTION 'revocation is permanent' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
    """CREATE TRIGGER virtual_keys_revocation_is_permanent
        BEFORE UPDATE OF revoked_at ON virtual_keys
        FOR EACH ROW EXECUTE FUNCTION keyguard_revocation_is_permanent()""",
    f"""CREATE TABLE key_secrets (
        key_id {_C} NOT NULL REFERENCES virtual_keys (key_id) ON DELETE CASCADE,
        digest BYTEA NOT NULL,
        created_at {_C} NOT NULL,
        valid_until {_C},
        PRIMARY KEY (key_id, digest))""",
    """CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        format INTEGER NOT NULL,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT NOT NULL,
        source TEXT NOT NULL,
        outcome TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    """CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL)""",
    """CREATE TABLE audit_pending (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        details TEXT NOT NULL)""",
]

#: MIGRATIONS[i] takes the schema from version i to version i + 1
MIGRATIONS: list[list[str]] = [
    _V1,
    ROTATION_V2_POSTGRES,
    LIMITS_V3_POSTGRES,
    ADMIN_TOKENS_V4_POSTGRES,
    ADMIN_TOKENS_V5_POSTGRES,
    COMPROMISE_V6_POSTGRES,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[Any], schema: str | None) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION` (``conn`` in autocommit mode; creates
    ``schema`` first when given). Returns the version found. Refuses a newer database."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        return upgrade(lambda statement: conn.execute(statement), MIGRATIONS)  # type: ignore[arg-type]
