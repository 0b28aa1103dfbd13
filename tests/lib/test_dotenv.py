"""The .env source, probed with files a careless user or another local user could leave."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

import keyguard
from keyguard import KeyFormatError, load_api_key
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


def test_dotenv_found_in_a_directory_anyone_can_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upward search must not pick up a .env that another local user planted, e.g. in
    /tmp above the project: the app would send every request with the planter's key."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    project = shared / "project"
    project.mkdir()
    planted = generate_openai_style_key("proj")
    (shared / ".env").write_text(f"OPENAI_API_KEY={planted}\n")
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError, match="other users can write") as info:
        load_api_key(env={}, sources=("dotenv",))
    assert planted not in str(info.value) and str(shared / ".env") in str(info.value)


def test_dotenv_writable_by_others_is_refused(tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    path = tmp_path / ".env"
    path.write_text(f"OPENAI_API_KEY={key}\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="other users can write"):
        load_api_key(env={}, sources=("dotenv",), dotenv_path=path)
    path.chmod(0o644)  # readable is the user's call (keyguard fix writes 0600)
    assert load_api_key(env={}, sources=("dotenv",), dotenv_path=path).reveal() == key


def _shown_with_locals(call: Callable[[], object]) -> str:
    """What Sentry, rich (show_locals) or pytest --showlocals would record for the error of
    ``call`` (caught here, so no test frame holding the key is part of its traceback)."""
    try:
        call()
    except KeyFormatError as exc:
        return "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
    raise AssertionError("no KeyFormatError")


def test_malformed_key_is_not_in_the_locals_of_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with a stray space is still the real key: the frames the error passes through
    must not hold it in a plain local variable."""
    key = generate_openai_style_key("proj")
    dotenv = tmp_path / ".env"
    dotenv.write_text(f'OPENAI_API_KEY="{key} "\n')
    shown = _shown_with_locals(lambda: load_api_key(sources=("dotenv",), dotenv_path=dotenv))
    assert "malformed" in shown and key not in shown
    monkeypatch.setenv("OPENAI_API_KEY", f"{key}\n")
    shown = _shown_with_locals(lambda: load_api_key(sources=("env",)))
    assert "malformed" in shown and key not in shown
    shown = _shown_with_locals(lambda: keyguard.openai_client(load_kwargs={"sources": ("env",)}))
    assert "malformed" in shown and key not in shown
