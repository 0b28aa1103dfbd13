"""The gateway's audit writer at shutdown: every record appended before ``close()`` reaches the
vault, even when another process holds the database's write lock at that moment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from keyguard.crypto.master import MasterKey
from keyguard.gateway.audit import AuditBatcher, RequestRecord
from keyguard.gateway.server import VaultAuditSink
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

#: another process (a CLI command, a long rewrap) holding the write lock for ``hold`` seconds
HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


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
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        for n in range(50):
            batcher.append(_record(n))
        batcher.close(timeout=10.0)
    finally:
        holder.wait(timeout=10)
        holder.stdout.close()  # type: ignore[union-attr]
    vault.close()
    reopened = Vault.open(SqliteStore(db), master)
    paths = [r.subject for r in reopened.audit.list() if r.action == "gateway.request"]
    assert len(paths) == 50
    assert reopened.audit.verify().ok
    reopened.close()
