"""CLI errors a careless user runs into: one `error:` line and an exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KEYGUARD = [sys.executable, "-m", "keyguard.cli"]


def _keyguard(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    env.update(extra)
    return subprocess.run(
        [*KEYGUARD, *args], input="", capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("where", ["KEYGUARD_HOME", "KEYGUARD_MASTER_KEY_FILE"])
def test_home_or_key_file_under_a_regular_file(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    paths = {"KEYGUARD_HOME": str(tmp_path / "home"), where: str(blocker / "sub")}
    proc = _keyguard("init", **paths)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert str(blocker) in proc.stderr
