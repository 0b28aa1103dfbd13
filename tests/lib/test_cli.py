"""The CLI end to end, as a user runs it: real `keyguard` processes on a real SQLite vault."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from keyguard.config import load_settings
from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.loading import load_api_key
from keyguard.wiring import open_vault, write_pending_key_file

KEYGUARD = [sys.executable, "-m", "keyguard.cli"]


class CLI:
    """Runs keyguard in a subprocess with its own home; keeps every output for sentinel checks."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.outputs: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KEYGUARD_", "OPENAI_"))}
        env["KEYGUARD_HOME"] = str(self.home)
        env.update(extra)
        return env

    def __call__(self, *args: str, stdin: str | None = None, expect: int = 0,
                 **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*KEYGUARD, *args], input=stdin if stdin is not None else "",
                              capture_output=True, text=True, env=self.env(**env), timeout=60)
        self.outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path / "home")


def test_full_flow_never_leaks(cli: CLI) -> None:
    real = generate_openai_style_key("proj")
    other = generate_openai_style_key("svcacct")
    cli("init")
    assert (cli.home / "master.key").stat().st_mode & 0o777 == 0o600
    assert cli.home.stat().st_mode & 0o777 == 0o700
    cli("upstream", "add", "default", "--from-env", "REAL_KEY", REAL_KEY=real)
    cli("upstream", "add", "second", "--stdin", stdin=other + "\n")
    shown = json.loads(cli("upstream", "show", "default", "--json").stdout)
    assert shown["versions"][0]["label"] == "CURRENT"
    listed = json.loads(cli("upstream", "list", "--json").stdout)
    assert {u["name"] for u in listed} == {"default", "second"}

    created = cli("key", "create", "app", "--model", "gpt-4o*", "--cidr", "10.0.0.0/8",
                  "--cidr", "2001:db8::/32", "--expires-in", "30d", "--rpm", "60", "--json")
    record = json.loads(created.stdout)
    token = record["key"]
    assert token.startswith("kg_") and record["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    creation_outputs = len(cli.outputs)
    listed_keys = json.loads(cli("key", "list", "--json").stdout)
    assert [k["key_id"] for k in listed_keys] == [record["key_id"]]
    cli("key", "show", record["key_id"])
    cli("key", "list")
    cli("key", "revoke", record["key_id"], "--reason", "test")
    assert json.loads(cli("key", "list", "--all", "--json").stdout)[0]["status"] == "revoked"
    assert cli("key", "list", "--json").stdout.strip() == "[]"
    cli("audit", "list")
    audit = json.loads(cli("audit", "list", "--json").stdout)
    assert [r["action"] for r in audit][:4] == ["vault.create", "upstream.add", "upstream.add",
                                                 "key.create"]
    assert "intact" in cli("audit", "verify").stdout
    cli("vault", "rewrap", "--new-kek")
    cli("vault", "rotate-master")
    cli("vault", "status")
    # the vault still opens and holds the same key
    settings = load_settings(env={"KEYGUARD_HOME": str(cli.home)})
    vault = open_vault(settings, {})
    try:
        assert vault.upstream_secret("default", audit=False)[1].reveal() == real
    finally:
        vault.close()

    for i, out in enumerate(cli.outputs):
        assert real not in out and other not in out
        assert real[12:60] not in out
        if i != creation_outputs - 2:  # the create command's stdout shows the token, once
            assert token not in out
    raw = b"".join(p.read_bytes() for p in cli.home.iterdir() if p.is_file())
    assert real.encode() not in raw and other.encode() not in raw and token.encode() not in raw


def test_secret_never_taken_from_argv(cli: CLI) -> None:
    cli("init")
    proc = cli("upstream", "add", "x", generate_openai_style_key("proj"), expect=2)
    assert "unexpected extra argument" in proc.stderr.lower() or "usage" in proc.stderr.lower()


def test_malformed_key_rejected_without_echo(cli: CLI) -> None:
    cli("init")
    bad = generate_openai_style_key("proj")[:-60] + "!!"
    proc = cli("upstream", "add", "default", "--stdin", stdin=bad, expect=2)
    assert "not an OpenAI API key" in proc.stderr and bad not in proc.stderr


def test_wrong_master_key_is_a_clear_error(cli: CLI) -> None:
    cli("init")
    wrong = MasterKey.generate().to_base64()
    proc = cli("upstream", "list", expect=3, KEYGUARD_MASTER_KEY=wrong)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "master key" in proc.stderr


def test_no_vault_says_run_init(cli: CLI) -> None:
    proc = cli("key", "list", expect=3)
    assert "keyguard init" in proc.stderr


def test_world_readable_key_file_refused(cli: CLI) -> None:
    cli("init")
    (cli.home / "master.key").chmod(0o644)
    proc = cli("key", "list", expect=2)
    assert "chmod 600" in proc.stderr


def test_not_found_exit_code(cli: CLI) -> None:
    cli("init")
    cli("key", "show", "aaaaaaaaaaaa", expect=4)
    cli("upstream", "show", "nope", expect=4)


def test_audit_verify_detects_tampering(cli: CLI) -> None:
    cli("init")
    cli("upstream", "add", "default", "--stdin", stdin=generate_openai_style_key("proj"))
    cli("key", "create", "a")
    db = sqlite3.connect(cli.home / "keyguard.db")
    try:
        table = next(name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%audit%'")
            if "head" not in name)
        db.execute(f"UPDATE {table} SET actor = 'user:mallory' WHERE seq = 2")
        db.commit()
    finally:
        db.close()
    proc = cli("audit", "verify", "--json", expect=1)
    report = json.loads(proc.stdout)
    assert not report["ok"] and report["problems"][0]["seq"] == 2
    assert report["problems"][0]["kind"] == "edited"


def test_up_without_serving_imports_env_key(cli: CLI) -> None:
    real = generate_openai_style_key("proj")
    proc = cli("up", "--no-serve", OPENAI_API_KEY=real)
    assert "imported OPENAI_API_KEY" in proc.stdout
    token = proc.stdout.strip().splitlines()[-1]
    assert token.startswith("kg_")
    assert real not in proc.stdout + proc.stderr
    again = cli("up", "--no-serve", OPENAI_API_KEY=real)
    assert "existing" in again.stdout and "kg_" not in again.stdout


def test_run_passes_key_in_environment(cli: CLI, tmp_path: Path) -> None:
    key = generate_openai_style_key("proj")
    script = "import os,sys; k=os.environ['OPENAI_API_KEY']; sys.exit(0 if len(k)==%d else 9)"
    cli("run", "--", sys.executable, "-c", script % len(key), OPENAI_API_KEY=key)
    cli("run", "--source", "env", "--", sys.executable, "-c", "import sys; sys.exit(5)",
        expect=2)  # no key: refused before running
    cli("run", "--", sys.executable, "-c", "import sys; sys.exit(5)", expect=5,
        OPENAI_API_KEY=key)


def test_load_api_key_from_vault(cli: CLI) -> None:
    real = generate_openai_style_key("proj")
    cli("init")
    cli("upstream", "add", "default", "--stdin", stdin=real)
    env = {"KEYGUARD_HOME": str(cli.home)}
    assert load_api_key(env=env, sources=("vault",)).reveal() == real


def test_interrupted_master_rotation_recovers(cli: CLI) -> None:
    real = generate_openai_style_key("proj")
    cli("init")
    cli("upstream", "add", "default", "--stdin", stdin=real)
    settings = load_settings(env={"KEYGUARD_HOME": str(cli.home)})
    vault = open_vault(settings, {})
    new = MasterKey.generate()
    write_pending_key_file(cli.home / "master.key", new)
    vault.rotate_master_key(new)  # ...and the process dies before renaming the key file
    vault.close()
    vault = open_vault(settings, {})
    try:
        assert vault.upstream_secret("default", audit=False)[1].reveal() == real
    finally:
        vault.close()
    assert not (cli.home / "master.key.new").exists()


def test_audit_list_prints_hostile_text_literally(cli: CLI) -> None:
    """Audit fields come from whoever sent a request: rich markup is printed as text (it used to
    crash `audit list` with a MarkupError) and terminal control characters are escaped."""
    from keyguard.domain.audit import AuditEvent

    cli("init")
    vault = open_vault(load_settings(env=cli.env()), {})
    try:
        vault.audit.append(
            AuditEvent(
                "gateway.request",
                "anonymous",
                subject="GET /v1/[/bold]x\x1b[2J\x1b[1A\u202eevil",
                source="127.0.0.1",
                outcome="denied",
            )
        )
    finally:
        vault.close()
    out = cli("audit", "list").stdout
    assert "[/bold]x" in out and "\\x1b[2J\\x1b[1A\\u202eevil" in out
    assert "\x1b" not in out and "\u202e" not in out
    data = json.loads(cli("audit", "list", "--json").stdout)
    assert data[-1]["subject"] == "GET /v1/[/bold]x\x1b[2J\x1b[1A\u202eevil"  # JSON: exact


def test_rotate_master_to_passphrase_and_back_without_a_terminal(cli: CLI) -> None:
    """KEYGUARD_PASSPHRASE opens the vault; KEYGUARD_NEW_PASSPHRASE is the one rotated to."""
    real = generate_openai_style_key()
    cli("init")
    cli("upstream", "add", "default", "--stdin", stdin=real)
    proc = cli("vault", "rotate-master", "--to", "passphrase", expect=2)
    assert "KEYGUARD_NEW_PASSPHRASE" in proc.stderr
    cli("vault", "rotate-master", "--to", "passphrase", KEYGUARD_NEW_PASSPHRASE="first phrase")
    assert not (cli.home / "master.key").exists()
    cli("vault", "status", expect=2)  # no passphrase given: says to set KEYGUARD_PASSPHRASE
    cli("vault", "status", KEYGUARD_PASSPHRASE="wrong phrase", expect=3)
    cli("vault", "status", KEYGUARD_PASSPHRASE="first phrase")
    cli(
        "vault", "rotate-master", "--to", "passphrase",
        KEYGUARD_PASSPHRASE="first phrase", KEYGUARD_NEW_PASSPHRASE="second phrase",
    )  # fmt: skip
    cli("vault", "status", KEYGUARD_PASSPHRASE="first phrase", expect=3)
    cli("vault", "rotate-master", "--to", "file", KEYGUARD_PASSPHRASE="second phrase")
    settings = load_settings(env={"KEYGUARD_HOME": str(cli.home)})
    vault = open_vault(settings, {})
    try:
        assert vault.upstream_secret("default", audit=False)[1].reveal() == real
    finally:
        vault.close()
    for out in cli.outputs:
        assert real not in out and "first phrase" not in out and "second phrase" not in out
