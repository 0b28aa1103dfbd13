"""`keyguard run`, as a careless user or a hostile child would probe it: real processes."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

from keyguard.domain.keys import generate_openai_style_key

KEYGUARD = [sys.executable, "-m", "keyguard.cli"]


def _run(home: Path, *args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    env.update(KEYGUARD_HOME=str(home), **extra)
    return subprocess.run(
        [*KEYGUARD, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def test_command_that_cannot_be_executed_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    program = tmp_path / "not-a-program"
    program.write_bytes(b"\x7fELF garbage, no shebang\n")
    program.chmod(0o755)
    proc = _run(tmp_path / "home", "run", "--", str(program), OPENAI_API_KEY=key)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot run") and str(program) in proc.stderr
    assert key not in proc.stdout + proc.stderr
    missing = _run(tmp_path / "home", "run", "--", "no-such-program-kg", OPENAI_API_KEY=key)
    assert missing.returncode == 2 and "command not found" in missing.stderr


def test_child_gets_the_key_but_not_the_master_key_or_passphrase(tmp_path: Path) -> None:
    """The child needs one API key; the master key would open every secret in the vault."""
    home = tmp_path / "home"
    key = generate_openai_style_key("proj")
    master = base64.b64encode(os.urandom(32)).decode()
    unlock = {"KEYGUARD_MASTER_KEY": master, "KEYGUARD_PASSPHRASE": "correct horse battery"}
    assert _run(home, "init", **unlock).returncode == 0
    assert _run(home, "upstream", "add", "default", "--stdin", stdin=key, **unlock).returncode == 0
    script = (
        "import os, sys; print(sorted(k for k in os.environ if k.startswith('KEYGUARD_')));"
        "sys.exit(0 if os.environ['OPENAI_API_KEY'] == sys.stdin.read() else 9)"
    )
    proc = _run(
        home, "run", "--source", "vault", "--", sys.executable, "-c", script, stdin=key, **unlock
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['KEYGUARD_HOME']"


def test_key_not_on_any_command_line_and_signals_pass_through(tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    script = (
        "import os, signal\n"
        "cmd = open(f'/proc/{os.getpid()}/cmdline', 'rb').read().decode()\n"
        "print(cmd.replace(chr(0), ' '))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    proc = _run(tmp_path / "home", "run", "--", sys.executable, "-c", script, OPENAI_API_KEY=key)
    assert proc.returncode == -signal.SIGTERM  # the child's death by signal, not keyguard's code
    assert key not in proc.stdout + proc.stderr
