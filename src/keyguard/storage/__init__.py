"""Storage: ports (Protocols) and backends. The SQLite backend is the embedded default."""

from __future__ import annotations

from pathlib import Path

from keyguard.errors import ConfigError
from keyguard.storage.ports import VaultStore
from keyguard.storage.sqlite import SqliteStore

__all__ = ["SqliteStore", "VaultStore", "open_store"]


def open_store(url: str, *, base_dir: Path | None = None) -> VaultStore:
    """Open a store by URL, SQLAlchemy style: ``sqlite:///vault.db`` (relative to ``base_dir``,
    the keyguard home), ``sqlite:////abs/vault.db``, ``sqlite:///:memory:``, or a bare path;
    ``postgresql://user@host:5432/db`` (or ``postgres://``, optional ``?schema=NAME``).
    """
    if url.startswith(("postgresql://", "postgres://")):
        return _open_postgres(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"storage URL scheme {scheme!r} is not supported: use sqlite:/// or postgresql://"
        )
    else:
        path = url
    if not path:
        raise ConfigError("storage URL has no path: use sqlite:///vault.db")
    if path != ":memory:" and base_dir is not None and not Path(path).is_absolute():
        path = str(base_dir / path)
    return SqliteStore(path)


def _open_postgres(url: str) -> VaultStore:
    try:  # imported lazily: SQLite users never load psycopg
        from keyguard.storage.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// database URL needs psycopg: pip install 'keyguard[postgres]'"
        ) from exc
    return PostgresStore(url)
