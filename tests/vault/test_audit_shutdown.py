"""The gateway's audit writer at shutdown: every record appended before ``close()`` reaches the
vault, even when another process holds the database's write lock at that moment."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from keyguard.crypto.master import MasterKey
from keyguard.gateway.audit import AuditBatcher, RequestRecord
from keyguard.gateway.server import VaultAuditSink
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.helpers import write_lock_held


def _record(n: int) -> RequestRecord:
    return RequestRecord(
        datetime.now(timezone.utc), None, "127.0.0.1", "POST", f"/v1/r{n}", None, 200, 1.0
    )


def test_close_waits_out_a_busy_database(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    master = MasterKey.generate()
    Vault.create(SqliteStore(db), master).close()
    vault = Vault.open(SqliteStore(db, busy_timeout_ms=200), master)
    batcher = AuditBatcher(VaultAuditSink(vault), interval=0.02)
    with write_lock_held(db, 1.5):
        for n in range(50):
            batcher.append(_record(n))
        batcher.close(timeout=10.0)
    vault.close()
    reopened = Vault.open(SqliteStore(db), master)
    paths = [r.subject for r in reopened.audit.list() if r.action == "gateway.request"]
    assert len(paths) == 50
    assert reopened.audit.verify().ok
    reopened.close()
