"""Crash safety: kill -9 a writer at random points; the vault must open, verify and decrypt."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.crash_writer import check_survivor

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 5


def test_kill_9_mid_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    master = MasterKey.generate()
    vault = Vault.create(SqliteStore(db), master)
    vault.add_upstream("prod", Secret(generate_openai_style_key()))
    vault.close()
    env = {**os.environ, "KG_TEST_MASTER": master.to_base64()}
    rng = random.Random(1234)
    tokens: list[str] = []
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(round_no)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        target = rng.randint(3, 40)
        for _ in range(target):
            line = proc.stdout.readline()
            assert line, f"writer died early (exit {proc.poll()})"
            if line.startswith("token "):
                tokens.append(line.split()[1])
        time.sleep(rng.random() * 0.02)  # land somewhere inside the next write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # printed after a commit, so durable too
            if line.startswith("token "):
                tokens.append(line.split()[1])
        proc.stdout.close()

        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        reopened = Vault.open(SqliteStore(db), master)
        check_survivor(reopened, tokens)
        reopened.close()
    assert tokens, "the writer never created a key"
