"""Schema steps 4 and 5: admin tokens of keyguard's admin API (``admin_tokens``).

One row per token: its public id, name, scope, who created it, and HMAC-SHA256 of its secret
part under the vault's server key (never the token). Revocation is permanent, as for virtual
keys. Writes do not bump the generation counter: nothing caches admin tokens.

Step 5 adds ``expires_at`` (NULL: never expires, so tokens made before it keep working) and
``last_used_at`` (NULL until the first recorded use).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from keyguard.domain.admin_tokens import AdminScope, AdminToken
from keyguard.storage import codec as c

ADMIN_TOKENS_V4 = [
    """CREATE TABLE admin_tokens (
        token_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('read', 'admin')),
        digest BLOB NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at TEXT)""",
]

#: the PostgreSQL twin (for keyguard.storage.postgres_schema)
ADMIN_TOKENS_V4_POSTGRES = [
    """CREATE TABLE admin_tokens (
        token_id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        scope TEXT COLLATE "C" NOT NULL CHECK (scope IN ('read', 'admin')),
        digest BYTEA NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        created_by TEXT COLLATE "C" NOT NULL,
        revoked_at TEXT COLLATE "C")""",
]

ADMIN_TOKENS_V5 = [
    "ALTER TABLE admin_tokens ADD COLUMN expires_at TEXT",
    "ALTER TABLE admin_tokens ADD COLUMN last_used_at TEXT",
]

#: the PostgreSQL twin (for keyguard.storage.postgres_schema)
ADMIN_TOKENS_V5_POSTGRES = [
    'ALTER TABLE admin_tokens ADD COLUMN expires_at TEXT COLLATE "C"',
    'ALTER TABLE admin_tokens ADD COLUMN last_used_at TEXT COLLATE "C"',
]

#: columns read back, in the order :func:`token_from_row` expects
TOKEN_COLUMNS = (
    "token_id, name, scope, created_at, created_by, revoked_at, expires_at, last_used_at"
)
#: index of ``digest`` in a row of ``SELECT {TOKEN_COLUMNS}, digest``
DIGEST_INDEX = len(TOKEN_COLUMNS.split(","))


def token_from_row(row: Sequence[object]) -> AdminToken:
    """An :class:`AdminToken` from a row of :data:`TOKEN_COLUMNS` (both backends)."""
    return AdminToken(
        token_id=str(row[0]),
        name=str(row[1]),
        scope=AdminScope(str(row[2])),
        created_at=c.dt_req(str(row[3])),
        created_by=str(row[4]),
        revoked_at=_dt(row[5]),
        expires_at=_dt(row[6]),
        last_used_at=_dt(row[7]),
    )


def _dt(value: object) -> datetime | None:
    return c.dt(None if value is None else str(value))


#: columns written, in the order :func:`token_params` gives them
INSERT_COLUMNS = (
    "token_id, name, scope, digest, created_at, created_by, revoked_at, expires_at, last_used_at"
)
#: how many values an insert takes
INSERT_ARITY = len(INSERT_COLUMNS.split(","))


def token_params(token: AdminToken, digest: bytes) -> tuple[object, ...]:
    """Insert parameters, in the order of :data:`INSERT_COLUMNS`."""
    return (
        token.token_id,
        token.name,
        token.scope.value,
        digest,
        c.iso(token.created_at),
        token.created_by,
        c.iso(token.revoked_at),
        c.iso(token.expires_at),
        c.iso(token.last_used_at),
    )
