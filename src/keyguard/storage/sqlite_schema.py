"""SQLite schema as a list of small upgrade steps; ``MIGRATIONS[i]`` upgrades version i to i+1.

The SQL stays close to what PostgreSQL accepts (TEXT timestamps in ISO 8601 UTC, BLOB becomes
BYTEA, INTEGER PRIMARY KEY becomes BIGINT) so :mod:`keyguard.storage.postgres_schema` mirrors
it step for step; :func:`keyguard.storage.migrations.upgrade` runs the steps of both. Never edit
a released step: add a new one.
"""

from __future__ import annotations

import sqlite3

from keyguard.storage.admin_token_schema import ADMIN_TOKENS_V4, ADMIN_TOKENS_V5
from keyguard.storage.compromise_schema import COMPROMISE_V6
from keyguard.storage.migrations import upgrade
from keyguard.storage.rotation_schema import ROTATION_V2
from keyguard.storage.usage_schema import LIMITS_V3

_V1 = [
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
    "INSERT INTO generation (id, value) VALUES (1, 0)",
    """CREATE TABLE keks (
        kek_id INTEGER PRIMARY KEY,
        wrapped BLOB NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE upstreams (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        base_url TEXT NOT NULL,
        organization TEXT,
        project TEXT,
        allow_insecure_loopback INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        last_rotated_at TEXT,
        max_age_s REAL)""",
    """CREATE TABLE upstream_versions (
        upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        label TEXT CHECK (label IN ('CURRENT', 'PENDING', 'PREVIOUS')),
        fingerprint TEXT NOT NULL,
        sealed BLOB NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (upstream, version),
        UNIQUE (upstream, label))""",
    "CREATE INDEX upstream_versions_fingerprint ON upstream_versions (fingerprint)",
    """CREATE TABLE virtual_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        upstream TEXT NOT NULL,
        allowed_models TEXT NOT NULL,
        allowed_endpoints TEXT NOT NULL,
        allowed_cidrs TEXT NOT NULL,
        expires_at TEXT,
        rpm INTEGER,
        tpm INTEGER,
        max_concurrency INTEGER,
        budget_usd REAL,
        budget_period TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT,
        max_age_s REAL)""",
    # revocation is permanent: once set, revoked_at can never change again
    """CREATE TRIGGER virtual_keys_revocation_is_permanent
        BEFORE UPDATE OF revoked_at ON virtual_keys
        WHEN OLD.revoked_at IS NOT NULL
             AND (NEW.revoked_at IS NULL OR NEW.revoked_at <> OLD.revoked_at)
        BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END""",
    """CREATE TABLE key_secrets (
        key_id TEXT NOT NULL REFERENCES virtual_keys (key_id) ON DELETE CASCADE,
        digest BLOB NOT NULL,
        created_at TEXT NOT NULL,
        valid_until TEXT,
        PRIMARY KEY (key_id, digest))""",
    """CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
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
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL)""",
    """CREATE TABLE audit_pending (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        details TEXT NOT NULL)""",
]

#: MIGRATIONS[i] takes the schema from version i to version i + 1
MIGRATIONS: list[list[str]] = [
    _V1,
    ROTATION_V2,
    LIMITS_V3,
    ADMIN_TOKENS_V4,
    ADMIN_TOKENS_V5,
    COMPROMISE_V6,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; call inside a write transaction.

    Returns the version found before migrating. Refuses a database newer than this code.
    """
    return upgrade(conn.execute, MIGRATIONS)
