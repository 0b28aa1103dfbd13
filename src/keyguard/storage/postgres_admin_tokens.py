"""PostgreSQL table of admin tokens (schema steps 4-5): twin of
:mod:`keyguard.storage.sqlite_admin_tokens` (no write bumps the generation counter)."""

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
from keyguard.storage.postgres_base import PgBase
from keyguard.storage.sqlite_base import decodes

_PLACES = ", ".join(["%s"] * INSERT_ARITY)


class PgAdminTokenTables(PgBase):
    """The :class:`~keyguard.storage.ports.AdminTokenStore` part of the PostgreSQL store."""

    def add_admin_token(self, token: AdminToken, digest: bytes) -> None:
        with self.transaction():
            if self._one("SELECT 1 FROM admin_tokens WHERE token_id = %s", (token.token_id,)):
                raise AlreadyExists(f"admin token {token.token_id} already exists")
            self._run(
                f"INSERT INTO admin_tokens ({INSERT_COLUMNS})"  # noqa: S608 - constant column list
                f" VALUES ({_PLACES})",
                token_params(token, digest),
            )

    @decodes
    def get_admin_token(self, token_id: str) -> tuple[AdminToken, bytes] | None:
        row = self._one(
            f"SELECT {TOKEN_COLUMNS}, digest FROM admin_tokens WHERE token_id = %s",  # noqa: S608 - constant column list
            (token_id,),
        )
        return None if row is None else (token_from_row(row), c.blob(row[DIGEST_INDEX]))

    @decodes
    def list_admin_tokens(self) -> list[AdminToken]:
        rows = self._all(
            f"SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, token_id"  # noqa: S608 - constant column list
        )
        return [token_from_row(r) for r in rows]

    def revoke_admin_token(self, token_id: str, at: datetime) -> AdminToken:
        with self.transaction():
            self._run(
                "UPDATE admin_tokens SET revoked_at = %s"
                " WHERE token_id = %s AND revoked_at IS NULL",
                (c.iso(at), token_id),
            )
            found = self.get_admin_token(token_id)
        if found is None:
            raise KeyNotFound(f"no admin token {token_id}")
        return found[0]

    def touch_admin_token(self, token_id: str, at: datetime, *, unless_after: datetime) -> bool:
        with self.transaction():
            n = self._run(
                "UPDATE admin_tokens SET last_used_at = %s WHERE token_id = %s"
                " AND (last_used_at IS NULL OR last_used_at <= %s)",
                (c.iso(at), token_id, c.iso(unless_after)),
            )
        return bool(n)
