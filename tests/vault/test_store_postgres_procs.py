"""The PostgreSQL backend under several processes: racing migrations, concurrent audit writers,
and a writer killed with SIGKILL mid-write.

Run as a script, this module is the writer process (``python test_store_postgres_procs.py MODE
URL ARG START_AT``); the master key comes from ``KG_TEST_MASTER``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from psycopg import sql

from keyguard.crypto.master import MasterKey
from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret
from keyguard.storage.postgres import PostgresStore
from keyguard.vault import Vault
from vault.crash_writer import check_survivor, write_forever
from vault.pg_fixtures import admin, pg_schema, pg_store_url, pg_url

__all__ = ["pg_schema", "pg_store_url", "pg_url"]  # fixtures: pytest finds them here

WRITERS, BATCHES, BATCH = 4, 15, 5
TESTS_DIR = Path(__file__).resolve().parent.parent


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def _append(url: str, writer: str, start_at: float) -> None:
    vault = Vault.open(PostgresStore(url), MasterKey.from_base64(os.environ["KG_TEST_MASTER"]))
    _wait_until(start_at)
    for b in range(BATCHES):
        events = [
            AuditEvent("proc.batch", f"w{writer}", details={"n": b * BATCH + i})
            for i in range(BATCH)
        ]
        vault.append_many(events)
    vault.close()


def _crash(url: str, seed: str) -> None:
    master = MasterKey.from_base64(os.environ["KG_TEST_MASTER"])
    write_forever(Vault.open(PostgresStore(url), master, source="crash-writer"), seed)


def _spawn(
    mode: str, url: str, arg: str, master: MasterKey, start_at: float = 0.0
) -> subprocess.Popen[str]:
    env = {**os.environ, "KG_TEST_MASTER": master.to_base64(), "PYTHONPATH": str(TESTS_DIR)}
    return subprocess.Popen(
        [sys.executable, __file__, mode, url, arg, str(start_at)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"writer failed with exit {proc.returncode}"
        outputs.append(out)
    return outputs


def test_processes_racing_to_migrate_a_fresh_schema(pg_url: str, pg_schema: str) -> None:
    fresh = pg_schema + "_race"
    url = f"{pg_url}?schema={fresh}"
    try:
        start = time.time() + 1.0
        master = MasterKey.generate()
        outputs = _finish([_spawn("open", url, str(i), master, start) for i in range(WRITERS)])
        assert sorted(int(o.split()[0]) for o in outputs).count(0) == 1  # one migrated, from 0
        s = PostgresStore(url)
        assert s.generation() == 0
        s.close()
    finally:
        with admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(fresh)))


def test_audit_chain_stays_linear_across_processes(pg_store_url: str) -> None:
    master = MasterKey.generate()
    vault = Vault.create(PostgresStore(pg_store_url), master)
    start = time.time() + 1.5  # every writer has opened the vault by then
    _finish([_spawn("append", pg_store_url, str(i), master, start) for i in range(WRITERS)])

    records = vault.audit.list()
    assert [r.seq for r in records] == list(range(1, len(records) + 1))  # gap-free
    report = vault.audit.verify()
    assert report.ok, str(report)
    mine = [r for r in records if r.action == "proc.batch"]
    assert len(mine) == WRITERS * BATCHES * BATCH
    for w in range(WRITERS):  # each writer's own records are in its order
        ns = [r.details["n"] for r in mine if r.actor == f"w{w}"]
        assert ns == list(range(BATCHES * BATCH))
    actors = [r.actor for r in mine]
    switches = sum(1 for a, b in zip(actors, actors[1:]) if a != b)
    assert switches >= WRITERS - 1  # (they did interleave, or at least all wrote)
    vault.close()


def test_kill_9_mid_write(pg_store_url: str) -> None:
    master = MasterKey.generate()
    vault = Vault.create(PostgresStore(pg_store_url), master)
    vault.add_upstream("prod", Secret(generate_openai_style_key()))
    vault.close()
    rng = random.Random(4321)
    tokens: list[str] = []
    for round_no in range(3):
        proc = _spawn("crash", pg_store_url, str(round_no), master)
        assert proc.stdout is not None
        for _ in range(rng.randint(3, 30)):
            line = proc.stdout.readline()
            assert line, f"writer died early (exit {proc.poll()})"
            if line.startswith("token "):
                tokens.append(line.split()[1])
        time.sleep(rng.random() * 0.02)  # land somewhere inside the next write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tokens += [ln.split()[1] for ln in proc.stdout if ln.startswith("token ")]
        proc.stdout.close()

        # the server rolls back the dead client's transaction and frees its write lock
        reopened = Vault.open(PostgresStore(pg_store_url), master)
        check_survivor(reopened, tokens)
        reopened.close()
    assert tokens, "the writer never created a key"


if __name__ == "__main__":
    mode, target, argument, start_at = sys.argv[1:5]
    if mode == "open":
        _wait_until(float(start_at))
        store = PostgresStore(target)
        print(store.migrated_from)
        store.close()
    elif mode == "append":
        _append(target, argument, float(start_at))
    else:
        _crash(target, argument)
