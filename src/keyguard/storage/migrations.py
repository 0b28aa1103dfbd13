"""Running schema steps: the one upgrade loop of both backends' schema modules.

A schema is a list of steps (lists of statements); ``steps[i]`` takes version ``i`` to ``i + 1``
and the version lives in the one-row ``schema_version`` table. The caller provides the
transaction (and, on PostgreSQL, the migration lock) around :func:`upgrade`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from keyguard.errors import StorageError


def upgrade(execute: Callable[[str], Any], steps: Sequence[Sequence[str]]) -> int:
    """Bring the schema up to ``len(steps)`` with ``execute`` (runs one statement, returns a
    cursor). Returns the version found before; refuses a database newer than ``steps``."""
    latest = len(steps)
    execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = execute("SELECT version FROM schema_version").fetchone()
    found = int(row[0]) if row else 0
    if row is None:
        execute("INSERT INTO schema_version (version) VALUES (0)")
    if found > latest:
        raise StorageError(
            f"database schema version {found} is newer than this keyguard supports"
            f" ({latest}); upgrade keyguard"
        )
    for step in steps[found:]:
        for statement in step:
            execute(statement)
    if found != latest:
        execute(f"UPDATE schema_version SET version = {latest:d}")  # noqa: S608 - an int
    return found
