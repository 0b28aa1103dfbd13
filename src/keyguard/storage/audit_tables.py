"""Tables of the audit log, written once for both SQL backends: chained records, the head
checkpoint, pending events.

Appends never fork the chain, whatever number of processes write: the vault reads the head and
appends inside one :meth:`~keyguard.storage.sqlbase.SqlBase.transaction`, which holds the
vault's write lock from its start to its commit (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory lock, see :mod:`keyguard.storage.postgres_base`). A caller that appends with a stale
head (outside a transaction) meets the ``seq`` primary key: :class:`ConcurrentUpdate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from keyguard.domain.audit import AuditHead, AuditRecord, AuditRow
from keyguard.errors import ConcurrentUpdate
from keyguard.storage import codec as c
from keyguard.storage.ports import PendingAudit
from keyguard.storage.sqlbase import SqlBase, decodes

_INSERT = (
    f"INSERT INTO audit_log ({c.AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"  # noqa: S608 - constant column lists
    " ON CONFLICT (seq) DO NOTHING"
)
_LIST = f"SELECT {c.AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq"  # noqa: S608 - constant column lists
_LIST_SOME = _LIST + " LIMIT ?"


class AuditTables(SqlBase):
    """The :class:`~keyguard.storage.ports.AuditStore` part of the store (no write bumps the
    generation)."""

    @decodes
    def audit_head(self) -> AuditHead | None:
        row = self._one("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
        return None if row is None else AuditHead(int(row[0]), row[1], row[2])

    def append_audit(self, rows: Sequence[AuditRow], head: AuditHead) -> None:
        with self.transaction():
            # DO NOTHING + a count, not a unique violation (see keyguard.storage.sqlbase)
            if self._run_many(_INSERT, rows) != len(rows):
                raise ConcurrentUpdate("audit sequence number already taken")
            self._run(
                "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " mac = excluded.mac",
                (head.seq, head.hash, head.mac),
            )

    @decodes
    def list_audit(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        rows = (
            self._all(_LIST, (after_seq,))
            if limit is None
            else self._all(_LIST_SOME, (after_seq, limit))
        )
        return [c.audit_from_row(r) for r in rows]

    def add_pending_audit(self, event: PendingAudit) -> None:
        self._write(
            "INSERT INTO audit_pending (time, action, actor, source, details)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                c.iso(event.time),
                event.action,
                event.actor,
                event.source,
                json.dumps(dict(event.details), sort_keys=True),
            ),
            bump=False,
        )

    @decodes
    def take_pending_audit(self) -> list[PendingAudit]:
        with self.transaction():  # the write lock: nothing is added between the two
            rows = self._all(
                "SELECT time, action, actor, source, details FROM audit_pending ORDER BY id"
            )
            self._run("DELETE FROM audit_pending")
        return [PendingAudit(c.dt_req(r[0]), r[1], r[2], r[3], json.loads(r[4])) for r in rows]
