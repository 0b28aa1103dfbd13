"""PostgreSQL backend: the store of multi-replica deployments (psycopg 3, sync API).

``PostgresStore("postgresql://user@host:5432/db?schema=keyguard")`` connects, migrates the schema
(under an advisory lock) and serves the :class:`~keyguard.storage.ports.VaultStore` protocol
with the table groups written once for both backends (:mod:`~keyguard.storage.vault_tables`,
:mod:`~keyguard.storage.audit_tables`, :mod:`~keyguard.storage.rotation_tables`,
:mod:`~keyguard.storage.admin_token_tables`); :mod:`keyguard.storage.postgres_base` says how it
connects and serialises writes.
"""

from __future__ import annotations

from keyguard.storage.admin_token_tables import AdminTokenTables
from keyguard.storage.audit_tables import AuditTables
from keyguard.storage.postgres_base import PgBase
from keyguard.storage.postgres_conn import parse_target
from keyguard.storage.rotation_tables import RotationTables
from keyguard.storage.vault_tables import VaultTables

__all__ = ["PostgresStore"]


class PostgresStore(VaultTables, AuditTables, RotationTables, AdminTokenTables, PgBase):
    """A :class:`~keyguard.storage.ports.VaultStore` in one PostgreSQL schema.

    ``url``: ``postgresql://`` or ``postgres://`` (libpq syntax, ``options=-csearch_path=...``
    honoured) with an optional ``?schema=NAME``; ``schema=`` overrides it. ``pool_size`` bounds
    the connections of this object; ``lock_timeout_ms`` how long a writer waits for the write
    lock (or a migration) before :class:`~keyguard.errors.StorageUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        lock_timeout_ms: int = 5000,
    ) -> None:
        target = parse_target(
            url, schema=schema, connect_timeout=connect_timeout, lock_timeout_ms=lock_timeout_ms
        )
        super().__init__(target, pool_size=pool_size, pool_timeout=connect_timeout)

    @property
    def url(self) -> str:
        """Where this store lives, without credentials (safe to print)."""
        return self._target.display
