"""Maintenance commands of two processes at once: a master-key rotation committed by one must
not let another (opened with the old master key) write records only the old key opens."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret
from keyguard.errors import VaultLocked
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.helpers import write_lock_held

#: another process: ``keyguard vault rotate-master`` from KG_OLD to KG_NEW
ROTATE_MASTER = textwrap.dedent(
    """
    import os, sys
    from keyguard.crypto.master import MasterKey
    from keyguard.storage.sqlite import SqliteStore
    from keyguard.vault import Vault
    v = Vault.open(SqliteStore(sys.argv[1]), MasterKey.from_base64(os.environ["KG_OLD"]))
    v.rotate_master_key(MasterKey.from_base64(os.environ["KG_NEW"]))
    v.close()
    """
)


def _rotate_master_elsewhere(db: Path, old: MasterKey, new: MasterKey) -> None:
    env = {**os.environ, "KG_OLD": old.to_base64(), "KG_NEW": new.to_base64()}
    subprocess.run([sys.executable, "-c", ROTATE_MASTER, str(db)], env=env, check=True)


def test_kek_rotation_by_a_process_holding_the_old_master_key(tmp_path: Path) -> None:
    db = tmp_path / "vault.db"
    old, new = MasterKey.generate(), MasterKey.generate()
    Vault.create(SqliteStore(db), old).close()
    stale = Vault.open(SqliteStore(db), old)  # e.g. `keyguard vault rotate-kek`, started earlier
    _rotate_master_elsewhere(db, old, new)
    with pytest.raises(VaultLocked, match="rotated by another process"):
        stale.rotate_kek()
    stale.close()
    reopened = Vault.open(SqliteStore(db), new)  # the new master key opens every KEK
    reopened.add_upstream("prod", Secret(generate_openai_style_key()))
    assert reopened.check() >= 3
    reopened.close()


def test_a_writer_waiting_for_the_lock_does_not_stall_readers_of_its_store(tmp_path: Path) -> None:
    # the gateway's request path reads (authenticator, upstream cache checks) through the store
    # its spend-counter thread writes through: waiting for another process's write lock must
    # not hold up those reads
    db = tmp_path / "vault.db"
    master = MasterKey.generate()
    vault = Vault.create(SqliteStore(db), master)
    with write_lock_held(db, 1.5):
        writer = threading.Thread(target=vault.touch_keys, args=({"k1": datetime.now(UTC)},))
        writer.start()
        time.sleep(0.2)  # the writer now waits for the write lock
        started = time.monotonic()
        vault.store.generation()
        vault.authenticator().refresh(force=True)
        waited = time.monotonic() - started
        writer.join(timeout=10)
    assert waited < 0.3, f"a read waited {waited:.2f} s behind a writer waiting for the lock"
    vault.close()
