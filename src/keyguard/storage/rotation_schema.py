"""Schema step 2: rotation state, leases, admin keys, service-account links.

Plain SQL that PostgreSQL also accepts (``BLOB`` becomes ``BYTEA``). Appended to
:data:`keyguard.storage.sqlite_schema.MIGRATIONS`; never edit it once released.
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
