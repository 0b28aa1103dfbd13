"""SQLite tables of the audit log: chained records, the head checkpoint, pending events."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keyguard.domain.audit import AuditHead, AuditRecord, AuditRow
from keyguard.errors import ConcurrentUpdate
from keyguard.storage import codec as c
from keyguard.storage.ports import PendingAudit
from keyguard.storage.sqlite_base import SqliteBase, _wrap, decodes


class SqliteAuditTables(SqliteBase):
    """The :class:`~keyguard.storage.ports.AuditStore` part of the SQLite store."""

    # -- audit ----------------------------------------------------------------------------

    @decodes
    def audit_head(self) -> AuditHead | None:
        with self._lock:
            row = self._run("SELECT seq, hash, mac FROM audit_head WHERE id = 1").fetchone()
        return None if row is None else AuditHead(int(row[0]), row[1], row[2])

    def append_audit(self, rows: Sequence[AuditRow], head: AuditHead) -> None:
        with self.transaction():
            try:
                self._conn.executemany(
                    f"INSERT INTO audit_log ({c.AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant column lists
                    rows,
                )
            except sqlite3.IntegrityError as exc:
                raise ConcurrentUpdate("audit sequence number already taken") from exc
            except sqlite3.Error as exc:
                raise _wrap(exc) from exc
            self._run(
                "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " mac = excluded.mac",
                (head.seq, head.hash, head.mac),
            )

    @decodes
    def list_audit(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        with self._lock:
            rows = self._run(
                f"SELECT {c.AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constant column lists
                (after_seq, -1 if limit is None else limit),
            ).fetchall()
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
        with self.transaction():
            rows = self._run(
                "SELECT time, action, actor, source, details FROM audit_pending ORDER BY id"
            ).fetchall()
            self._run("DELETE FROM audit_pending")
        return [PendingAudit(c.dt_req(r[0]), r[1], r[2], r[3], json.loads(r[4])) for r in rows]
