"""The .env source, probed with files a careless user or another local user could leave."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from keyguard import load_api_key
from keyguard.domain.keys import generate_openai_style_key
from keyguard.errors import ConfigError

KEYGUARD = [sys.executable, "-m", "keyguard.cli"]


def _not_utf8_dotenv(path: Path, key: str) -> None:
    # saved in Latin-1 by some editor: an "é" in a comment makes the file invalid UTF-8
    path.write_bytes(b"# cl\xe9 de prod\nOPENAI_API_KEY=" + key.encode() + b"\n")


def test_dotenv_that_is_not_utf8_is_a_config_error_holding_no_value(tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    _not_utf8_dotenv(tmp_path / ".env", key)
    with pytest.raises(ConfigError) as info:
        load_api_key(env={}, sources=("dotenv",), dotenv_path=tmp_path / ".env")
    exc = info.value
    assert "UTF-8" in str(exc) and str(tmp_path / ".env") in str(exc)
    # the decoder's error holds the whole file: it must not travel with the error
    shown = repr(exc.args) + "".join(traceback.format_exception(exc))
    assert key not in shown and key.encode() not in repr(exc.args).encode()
    assert exc.__cause__ is None and exc.__context__ is None


def test_run_with_a_dotenv_that_is_not_utf8_reports_an_error(tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    _not_utf8_dotenv(tmp_path / ".env", key)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    env["KEYGUARD_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [*KEYGUARD, "run", "--source", "dotenv", "--", sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    assert key not in proc.stdout + proc.stderr
