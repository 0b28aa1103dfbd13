"""A vault writer for the crash test: writes forever until it is killed (kill -9).

Reads the database path from argv[1] and the master key from the KG_TEST_MASTER environment
variable. After each committed operation it prints one line, so the parent knows what is
durable: ``token <token>`` for a created key, ``op <n>`` otherwise.
"""

from __future__ import annotations

import os
import random
import sys
from datetime import datetime, timezone

from keyguard.crypto.master import MasterKey
from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.records import KeySpec, Label
from keyguard.domain.secret import Secret
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault


def write_forever(vault: Vault, seed: str) -> None:
    """Write at random until killed; print a line after each commit (``token T`` for a new key).

    Shared by the SQLite crash test (this script) and the PostgreSQL one
    (``test_store_postgres_procs.py``): the vault must already hold an upstream named ``prod``.
    """
    rng = random.Random(int(seed))
    keys: list[str] = []
    n = 0
    while True:
        n += 1
        choice = rng.random()
        if choice < 0.2:
            vault.add_upstream(f"up-{seed}-{n}", Secret(generate_openai_style_key()))
        elif choice < 0.4:
            label = rng.choice([Label.CURRENT, Label.PENDING, None])
            vault.add_upstream_version("prod", Secret(generate_openai_style_key()), label=label)
        elif choice < 0.6:
            key, token = vault.create_key(KeySpec(name=f"k{n}", upstream="prod"))
            keys.append(key.key_id)
            print("token", token.reveal(), flush=True)
            continue
        elif choice < 0.7 and keys:
            vault.revoke_key(keys.pop(0))
        elif choice < 0.9:
            vault.append_many([AuditEvent("crash.batch", "w", details={"i": i}) for i in range(20)])
        elif choice < 0.95:
            vault.rotate_kek()  # one transaction rewrapping every record
        else:
            vault.rotate_master_key(MasterKey.from_base64(os.environ["KG_TEST_MASTER"]))
        print("op", n, flush=True)


def check_survivor(reopened: Vault, tokens: list[str]) -> None:
    """After a kill: every record opens, the chain verifies, and no committed key was lost."""
    assert reopened.check() >= 3  # every sealed record opens, the audit chain verifies
    assert reopened.upstream_secret("prod", audit=False)[1].reveal().startswith("sk-")
    auth = reopened.authenticator()
    now = datetime.now(timezone.utc)
    for token in tokens:
        try:
            auth.authenticate(token, now)
        except Exception as exc:  # revoked keys are fine; unknown ones are lost writes
            assert str(exc) == "API key revoked", f"committed key lost: {exc}"


def main() -> None:
    vault = Vault.open(
        SqliteStore(sys.argv[1]),
        MasterKey.from_base64(os.environ["KG_TEST_MASTER"]),
        source="crash-writer",
    )
    write_forever(vault, sys.argv[2])


if __name__ == "__main__":
    main()
