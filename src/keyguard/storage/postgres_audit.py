"""PostgreSQL tables of the audit log: chained records, the head checkpoint, pending events.

Appends never fork the chain, whatever number of processes write: the vault reads the head and
appends inside one :meth:`~PgBase.transaction`, which holds the vault's write lock from its first
statement to its commit (see :mod:`keyguard.storage.postgres_base`). A caller that appends with
a stale head (outside a transaction) meets the ``seq`` primary key: :class:`ConcurrentUpdate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from keyguard.domain.audit import AuditHead, AuditRecord, AuditRow
from keyguard.errors import ConcurrentUpdate
from keyguard.storage import codec as c
from keyguard.storage.ports import PendingAudit
from keyguard.storage.postgres_base import PgBase
from keyguard.storage.sqlite_base import decodes

_INSERT = (
    f"INSERT INTO audit_log ({c.AUDIT_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"  # noqa: S608 - constant column lists
    " ON CONFLICT (seq) DO NOTHING"
)


class PgAuditTables(PgBase):
    """The :class:`~keyguard.storage.ports.AuditStore` part of the PostgreSQL store."""

    @decodes
    def audit_head(self) -> AuditHead | None:
        row = self._one("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
        return None if row is None else AuditHead(int(row[0]), row[1], row[2])

    def append_audit(self, rows: Sequence[AuditRow], head: AuditHead) -> None:
        with self.transaction():
            # DO NOTHING + a count, not a unique violation: an error would poison the whole
            # (possibly outer) transaction, where SQLite fails just the statement
            inserted = self._run_many(_INSERT, rows)
            if inserted != len(rows):
                raise ConcurrentUpdate("audit sequence number already taken")
            self._run(
                "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " mac = excluded.mac",
                (head.seq, head.hash, head.mac),
            )

    @decodes
    def list_audit(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        rows = self._all(
            f"SELECT {c.AUDIT_COLUMNS} FROM audit_log WHERE seq > %s ORDER BY seq LIMIT %s",  # noqa: S608 - constant column lists
            (after_seq, limit),  # LIMIT NULL: no limit
        )
        return [c.audit_from_row(r) for r in rows]

    def add_pending_audit(self, event: PendingAudit) -> None:
        self._write(
            "INSERT INTO audit_pending (time, action, actor, source, details)"
            " VALUES (%s, %s, %s, %s, %s)",
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
        with self.transaction():
            rows = self._all(
                "DELETE FROM audit_pending RETURNING id, time, action, actor, source, details"
            )
        rows.sort(key=lambda r: int(r[0]))
        return [PendingAudit(c.dt_req(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]
