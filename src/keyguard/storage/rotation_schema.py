"""Schema step 2: rotation state, leases, admin keys, service-account links.

:data:`ROTATION_V2` is step 2 of :data:`keyguard.storage.sqlite_schema.MIGRATIONS`,
:data:`ROTATION_V2_POSTGRES` its twin in :data:`keyguard.storage.postgres_schema.MIGRATIONS`
(``COLLATE "C"`` text where rows are sorted or compared, ``BYTEA``, ``BIGINT``). Never edit a
released step: add a new one.
"""

from __future__ import annotations

ROTATION_V2 = [
    # one row per upstream: the latest rotation (its record is JSON of domain.rotation)
    """CREATE TABLE rotations (
        upstream TEXT PRIMARY KEY REFERENCES upstreams (name) ON DELETE CASCADE,
        rotation_id TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        record TEXT NOT NULL)""",
    # named locks with an expiry (one rotation per credential; one scheduler per cluster)
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL)""",
    """CREATE TABLE admin_keys (
        upstream TEXT PRIMARY KEY REFERENCES upstreams (name) ON DELETE CASCADE,
        project_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        sealed BLOB NOT NULL,
        created_at TEXT NOT NULL)""",
    # no foreign key: the link outlives a deleted upstream so drift checks still see it
    """CREATE TABLE service_accounts (
        upstream TEXT NOT NULL,
        version INTEGER NOT NULL,
        project_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        api_key_id TEXT,
        created_at TEXT NOT NULL,
        deleted_at TEXT,
        PRIMARY KEY (upstream, version))""",
    "CREATE INDEX service_accounts_account ON service_accounts (account_id)",
]

#: the PostgreSQL twin (for keyguard.storage.postgres_schema)
ROTATION_V2_POSTGRES = [
    """CREATE TABLE rotations (
        upstream TEXT COLLATE "C" PRIMARY KEY REFERENCES upstreams (name) ON DELETE CASCADE,
        rotation_id TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL,
        record TEXT NOT NULL)""",
    """CREATE TABLE leases (
        name TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TEXT COLLATE "C" NOT NULL)""",
    """CREATE TABLE admin_keys (
        upstream TEXT COLLATE "C" PRIMARY KEY REFERENCES upstreams (name) ON DELETE CASCADE,
        project_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        sealed BYTEA NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL)""",
    # no foreign key: the link outlives a deleted upstream so drift checks still see it
    """CREATE TABLE service_accounts (
        upstream TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        project_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        api_key_id TEXT,
        created_at TEXT COLLATE "C" NOT NULL,
        deleted_at TEXT COLLATE "C",
        PRIMARY KEY (upstream, version))""",
    "CREATE INDEX service_accounts_account ON service_accounts (account_id)",
]
