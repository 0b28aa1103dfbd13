"""``keyguard key usage`` in embedded mode (spend persisted in the SQLite vault file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.limits import period_id
from keyguard.domain.records import BudgetPeriod
from keyguard.storage.sqlite import SqliteStore
from keyguard.storage.sqlite_usage import SqliteSpendStore


def kg(home: Path, *args: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "keyguard.cli", *args],
        env={**base, "KEYGUARD_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def test_key_usage_embedded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    real = generate_openai_style_key("proj")
    kg(home, "init")
    kg(home, "upstream", "add", "default", "--from-env", "REAL", REAL=real)
    created = json.loads(
        kg(home, "key", "create", "app", "--budget-usd", "2", "--budget-period", "daily", "--json")
    )
    key_id = created["key_id"]
    now = datetime.now(timezone.utc)
    store = SqliteStore(home / "keyguard.db")
    SqliteSpendStore(store).add_spend(
        {(key_id, period_id(BudgetPeriod.DAILY, now)): 500_000_000}, now
    )
    store.close()
    usage = json.loads(kg(home, "key", "usage", key_id, "--json"))
    assert usage["backend"] == "in-process"
    assert usage["spent_usd"] == 0.5 and usage["remaining_usd"] == 1.5
    assert usage["period"] == period_id(BudgetPeriod.DAILY, now)
    assert usage["requests_last_minute"] is None
    text = kg(home, "key", "usage", key_id)
    assert "spent_usd" in text and "n/a" in text
    assert real not in text
