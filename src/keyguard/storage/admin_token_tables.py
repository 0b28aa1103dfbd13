"""The admin-token table (schema steps 4-5), written once for both SQL backends; see
:mod:`keyguard.storage.admin_token_schema` for the table and its row codec.

None of these writes bumps the generation counter: no cache depends on admin tokens.
"""

from __future__ import annotations

from datetime import datetime

from keyguard.domain.admin_tokens import AdminToken
from keyguard.errors import AlreadyExists, KeyNotFound
from keyguard.storage import codec as c
from keyguard.storage.admin_token_schema import (
    DIGEST_INDEX,
    INSERT_ARITY,
    INSERT_COLUMNS,
    TOKEN_COLUMNS,
    token_from_row,
    token_params,
)
from keyguard.storage.sqlbase import SqlBase, decodes

_INSERT = (
    f"INSERT INTO admin_tokens ({INSERT_COLUMNS}) VALUES ({', '.join('?' * INSERT_ARITY)})"  # noqa: S608 - constant column list
    " ON CONFLICT (token_id) DO NOTHING"
)
_GET = f"SELECT {TOKEN_COLUMNS}, digest FROM admin_tokens WHERE token_id = ?"  # noqa: S608 - constant column list
_LIST = f"SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, token_id"  # noqa: S608 - constant column list


class AdminTokenTables(SqlBase):
    """The :class:`~keyguard.storage.ports.AdminTokenStore` part of the store."""

    def add_admin_token(self, token: AdminToken, digest: bytes) -> None:
        if not self._write(_INSERT, token_params(token, digest), bump=False):
            raise AlreadyExists(f"admin token {token.token_id} already exists")

    @decodes
    def get_admin_token(self, token_id: str) -> tuple[AdminToken, bytes] | None:
        row = self._one(_GET, (token_id,))
        return None if row is None else (token_from_row(row), c.blob(row[DIGEST_INDEX]))

    @decodes
    def list_admin_tokens(self) -> list[AdminToken]:
        return [token_from_row(r) for r in self._all(_LIST)]

    def revoke_admin_token(self, token_id: str, at: datetime) -> AdminToken:
        with self.transaction():
            self._run(
                "UPDATE admin_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (c.iso(at), token_id),
            )
            found = self.get_admin_token(token_id)
        if found is None:
            raise KeyNotFound(f"no admin token {token_id}")
        return found[0]

    def touch_admin_token(self, token_id: str, at: datetime, *, unless_after: datetime) -> bool:
        return bool(
            self._write(
                "UPDATE admin_tokens SET last_used_at = ? WHERE token_id = ?"
                " AND (last_used_at IS NULL OR last_used_at <= ?)",
                (c.iso(at), token_id, c.iso(unless_after)),
                bump=False,
            )
        )
