"""SQLite table of admin tokens (schema steps 4-5); see :mod:`keyguard.storage.admin_token_schema`.

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
from keyguard.storage.sqlite_base import SqliteBase, decodes

_PLACES = ", ".join("?" * INSERT_ARITY)


class SqliteAdminTokenTables(SqliteBase):
    """The :class:`~keyguard.storage.ports.AdminTokenStore` part of the SQLite store."""

    def add_admin_token(self, token: AdminToken, digest: bytes) -> None:
        with self.transaction():
            found = self._run("SELECT 1 FROM admin_tokens WHERE token_id = ?", (token.token_id,))
            if found.fetchone():
                raise AlreadyExists(f"admin token {token.token_id} already exists")
            self._write(
                f"INSERT INTO admin_tokens ({INSERT_COLUMNS}) VALUES ({_PLACES})",  # noqa: S608 - constant column list
                token_params(token, digest),
                bump=False,
            )

    @decodes
    def get_admin_token(self, token_id: str) -> tuple[AdminToken, bytes] | None:
        with self._lock:
            row = self._run(
                f"SELECT {TOKEN_COLUMNS}, digest FROM admin_tokens WHERE token_id = ?",  # noqa: S608 - constant column list
                (token_id,),
            ).fetchone()
        return None if row is None else (token_from_row(row), c.blob(row[DIGEST_INDEX]))

    @decodes
    def list_admin_tokens(self) -> list[AdminToken]:
        with self._lock:
            rows = self._run(
                f"SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, token_id"  # noqa: S608 - constant column list
            ).fetchall()
        return [token_from_row(r) for r in rows]

    def revoke_admin_token(self, token_id: str, at: datetime) -> AdminToken:
        with self.transaction():
            self._write(
                "UPDATE admin_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (c.iso(at), token_id),
                bump=False,
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
