"""SQLite backend: the embedded default store.

:class:`SqliteStore` is the table groups written once for both backends
(:mod:`~keyguard.storage.vault_tables`, :mod:`~keyguard.storage.audit_tables`,
:mod:`~keyguard.storage.rotation_tables`, :mod:`~keyguard.storage.admin_token_tables`) over
:class:`~keyguard.storage.sqlite_base.SqliteBase`, which says how it uses SQLite.
"""

from __future__ import annotations

from pathlib import Path

from keyguard.errors import KeyguardError, StorageUnavailable
from keyguard.storage.admin_token_tables import AdminTokenTables
from keyguard.storage.audit_tables import AuditTables
from keyguard.storage.rotation_tables import RotationTables
from keyguard.storage.sqlite_base import MEMORY, SqliteBase
from keyguard.storage.vault_tables import VaultTables

__all__ = ["MEMORY", "SqliteStore", "open_sqlite"]


class SqliteStore(VaultTables, AuditTables, RotationTables, AdminTokenTables, SqliteBase):
    """A :class:`~keyguard.storage.ports.VaultStore` over one SQLite file (or ``:memory:``)."""


def open_sqlite(path: str | Path, **kwargs: int) -> SqliteStore:
    """Open (creating if needed) a SQLite store; errors are :class:`KeyguardError` subclasses."""
    try:
        return SqliteStore(path, **kwargs)
    except KeyguardError:
        raise
    except OSError as exc:
        raise StorageUnavailable(f"cannot open database {path}: {exc.strerror}") from exc
