"""Schema step 3: the in-process limiter's budget counters (``limit_spend``).

One row per (virtual key, budget period id such as ``m2026-11``): nano-USD spent. Written by
the gateway's in-process limiter as increments; read by ``keyguard key usage``. No foreign key
to ``virtual_keys``: counters of a deleted key are harmless and the gateway must never fail a
request because a counter row cannot be written.
"""

from __future__ import annotations

LIMITS_V3 = [
    """CREATE TABLE limit_spend (
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        spent_nano INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (key_id, period))""",
]

#: the PostgreSQL twin (for keyguard.storage.postgres_schema)
LIMITS_V3_POSTGRES = [
    """CREATE TABLE limit_spend (
        key_id TEXT COLLATE "C" NOT NULL,
        period TEXT COLLATE "C" NOT NULL,
        spent_nano BIGINT NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (key_id, period))""",
]
