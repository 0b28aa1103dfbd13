"""keyguard scan / fix through click's CliRunner, and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from keyguard.cli.main import cli
from scanner.fakeupstream import FakeOpenAI, serve
from scanner.gitutil import git
from scanner.keygen import openai_key, virtual_key

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Never touch the developer's ~/.keyguard: every CLI call gets an empty home."""
    home = tmp_path / "kg-home"
    monkeypatch.setenv("KEYGUARD_HOME", str(home))
    for var in (
        "KEYGUARD_DATABASE_URL",
        "KEYGUARD_MASTER_KEY",
        "KEYGUARD_PASSPHRASE",
        "KEYGUARD_CONFIG",
        "KEYGUARD_VERIFY_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def managed_vault(isolated_home, rng):
    """A real vault in the isolated home (``keyguard init``), with an upstream and a key."""
    from keyguard.config import load_settings
    from keyguard.domain.records import KeySpec
    from keyguard.domain.secret import Secret
    from keyguard.wiring import open_vault

    assert run("init").exit_code == 0
    up = openai_key(rng)
    vault = open_vault(load_settings({"home": str(isolated_home)}), os.environ)
    try:
        vault.add_upstream("default", Secret(up, register=False))
        vk, token = vault.create_key(KeySpec(name="app", upstream="default"))
    finally:
        vault.close()
    return up, vk.key_id, token.reveal()


def _vault(home):
    from keyguard.config import load_settings
    from keyguard.wiring import open_vault

    return open_vault(load_settings({"home": str(home)}), os.environ)


@pytest.fixture
def leaky(tmp_path, rng):
    keys = [openai_key(rng), virtual_key(rng)]
    (tmp_path / "app.py").write_text(f"import openai\nopenai.api_key = '{keys[0]}'\n")
    (tmp_path / ".env.local").write_text(f"KG={keys[1]}\n")
    return tmp_path, keys


def _no_keys(text: str, keys) -> None:
    for key in keys:
        assert key not in text


def test_clean_tree_exits_0(tmp_path):
    (tmp_path / "a.py").write_text("print('sk-your-key-here')\n")
    result = run("scan", str(tmp_path))
    assert result.exit_code == 0 and "no keys found" in result.output


def test_findings_exit_1_text_json_sarif(leaky, tmp_path):
    root, keys = leaky
    text = run("scan", str(root))
    assert text.exit_code == 1
    assert "openai-project" in text.output and "keyguard-virtual-key" in text.output
    _no_keys(text.output, keys)
    as_json = run("scan", "--json", str(root))
    doc = json.loads(as_json.output)
    assert as_json.exit_code == 1 and doc["summary"]["findings"] == 2
    sarif_file = tmp_path / "out.sarif"
    as_sarif = run("scan", "--sarif", "-o", str(sarif_file), str(root))
    assert as_sarif.exit_code == 1 and as_sarif.output == ""
    jsonschema.validate(json.loads(sarif_file.read_text()), SCHEMA)
    _no_keys(json.dumps(doc) + sarif_file.read_text(), keys)


def test_stdin(rng):
    key = openai_key(rng, "admin")
    result = run("scan", "--json", "-", input=f"token: {key}\n")
    assert result.exit_code == 1
    [f] = json.loads(result.output)["findings"]
    assert (f["path"], f["format"], f["source"]) == ("<stdin>", "openai-admin", "stdin")


def test_staged_and_stdin_count_binary_content_as_skipped(repo, rng, monkeypatch):
    key = openai_key(rng)
    (repo / "blob.bin").write_bytes(b"\x00\x01\x02" + key.encode() + b"\x00" * 32)
    (repo / "app.py").write_text(f"K = '{key}'\n")
    git(repo, "add", ".")
    monkeypatch.chdir(repo)
    staged = run("scan", "--staged", "--json")
    tree = run("scan", "--json")
    sarif = run("scan", "--staged", "--sarif")
    text = run("scan", "--staged", "--no-color")
    for result in (staged, tree):
        doc = json.loads(result.output)
        assert doc["skipped"] == [{"path": "blob.bin", "reason": "binary"}]
        assert doc["summary"]["files_scanned"] == 1
        assert [f["path"] for f in doc["findings"]] == ["app.py"]
    [notification] = json.loads(sarif.output)["runs"][0]["invocations"][0][
        "toolExecutionNotifications"
    ]
    assert "blob.bin" in json.dumps(notification)
    assert "skipped 1 file(s): 1 binary" in text.output and "in 1 files" in text.output
    _no_keys(staged.output + sarif.output + text.output, [key])
    binary_stdin = run("scan", "--json", "-", input=b"\x00\x01" + key.encode())
    doc = json.loads(binary_stdin.output)
    assert doc["skipped"] == [{"path": "<stdin>", "reason": "binary"}]
    assert doc["summary"]["files_scanned"] == 0 and doc["findings"] == []


def test_errors_exit_2(tmp_path):
    assert run("scan", str(tmp_path / "missing")).exit_code == 2
    assert run("scan", "--staged", str(tmp_path)).exit_code == 2
    assert run("scan", "--update-baseline", str(tmp_path)).exit_code == 2
    (tmp_path / "bad.json").write_text("{}")
    assert run("scan", "--baseline", str(tmp_path / "bad.json"), str(tmp_path)).exit_code == 2


def test_baseline_flow(leaky, rng):
    root, _ = leaky
    base = root.parent / "baseline.json"
    assert run("scan", "--baseline", str(base), "--update-baseline", str(root)).exit_code == 0
    result = run("scan", "--baseline", str(base), str(root))
    assert result.exit_code == 0 and "2 in baseline" in result.output
    (root / "new.py").write_text(f"K = '{openai_key(rng)}'\n")
    result = run("scan", "--json", "--baseline", str(base), str(root))
    doc = json.loads(result.output)
    assert result.exit_code == 1 and [f["path"] for f in doc["findings"]] == [str(root / "new.py")]
    assert doc["summary"]["baselined"] == 2


def test_staged_and_history_via_cli(repo, rng, monkeypatch):
    key = openai_key(rng)
    (repo / "a.py").write_text(f"K = '{key}'\n")
    git(repo, "add", ".")
    monkeypatch.chdir(repo)
    staged = run("scan", "--staged", "--json")
    assert staged.exit_code == 1 and json.loads(staged.output)["findings"][0]["path"] == "a.py"
    git(repo, "commit", "-qm", "oops")
    (repo / "a.py").write_text("K = None\n")
    git(repo, "commit", "-qam", "fix")
    assert run("scan", "--staged").exit_code == 0
    history = run("scan", "--history")
    assert history.exit_code == 1 and "rotate" in history.output
    _no_keys(history.output, [key])


def test_verify_flag_uses_the_configured_upstream(leaky):
    root, keys = leaky
    FakeOpenAI.live = {keys[0]}
    with serve() as base:
        result = run("scan", "--json", "--verify", "--verify-base-url", base + "/v1", str(root))
    states = {f["format"]: f.get("verification") for f in json.loads(result.output)["findings"]}
    assert states == {"openai-project": "active", "keyguard-virtual-key": None}


def test_verify_default_base_url_is_the_verifiers():
    from keyguard.cli.scan_cmd import DEFAULT_VERIFY_BASE_URL
    from keyguard.scanner.verify import DEFAULT_BASE_URL

    assert DEFAULT_VERIFY_BASE_URL == DEFAULT_BASE_URL


def test_fix_cli_dry_run_then_real(repo, rng):
    key = openai_key(rng)
    (repo / "app.py").write_text(f"from openai import OpenAI\nc = OpenAI(api_key='{key}')\n")
    dry = run("fix", "--dry-run", str(repo))
    assert (
        dry.exit_code == 0 and "dry run" in dry.output and "+c = OpenAI(api_key=os." in dry.output
    )
    _no_keys(dry.output, [key])
    real = run("fix", "--json", str(repo))
    doc = json.loads(real.output)
    assert real.exit_code == 0 and doc["files"][0]["rewritten"] == [
        {"line": 2, "env": "OPENAI_API_KEY"}
    ]
    _no_keys(real.output, [key])
    assert run("scan", str(repo)).exit_code == 0  # .env is git-ignored now


def test_fix_cli_notebook_output_key_is_redacted_not_copied_to_dotenv(repo, rng):
    code_key, output_key = openai_key(rng), openai_key(rng, "svcacct")
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": 1,
                "metadata": {},
                "outputs": [],
                "source": [f"KEY = '{code_key}'"],
            },
            {
                "cell_type": "code",
                "execution_count": 2,
                "metadata": {},
                "outputs": [{"name": "stdout", "output_type": "stream", "text": [output_key]}],
                "source": ["print(os.environ['OPENAI_API_KEY'])"],
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = repo / "demo.ipynb"
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
    dry = run("fix", "--dry-run", str(repo))
    assert "demo.ipynb:" in dry.output and "output would be redacted; rotate this key" in dry.output
    assert output_key in path.read_text() and not (repo / ".env").exists()
    real = run("fix", str(repo))
    assert real.exit_code == 1  # the code cell needs a manual edit
    assert "cell 2 output redacted; rotate this key" in real.output
    assert "cell 1" in real.output and "nbconvert" not in real.output
    env = (repo / ".env").read_text()
    assert code_key in env and output_key not in env
    assert output_key not in path.read_text()
    as_json = run("fix", "--json", "--dry-run", str(repo))  # nothing left in outputs
    assert json.loads(as_json.output)["files"][0]["redacted_outputs"] == []
    _no_keys(dry.output + real.output + as_json.output, [code_key, output_key])


def test_real_subprocess(leaky):
    root, keys = leaky
    exe = Path(sys.executable).with_name("keyguard")
    proc = subprocess.run(
        [str(exe), "scan", "--no-color", str(root)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert "2 key(s) found" in proc.stdout
    _no_keys(proc.stdout + proc.stderr, keys)


def test_scan_reports_managed_keys_and_revokes_them(tmp_path, managed_vault, isolated_home):
    up, key_id, token = managed_vault
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "app.py").write_text(f"UP = '{up}'\nVK = '{token}'\n")
    shown = run("scan", "--json", str(tree))
    managed_by = {f["format"]: f.get("managed") for f in json.loads(shown.output)["findings"]}
    assert managed_by["openai-project"] == "upstream credential 'default' version 1, CURRENT"
    assert managed_by["keyguard-virtual-key"].startswith(f"virtual key {key_id}")
    vault = _vault(isolated_home)
    try:
        assert not vault.get_key(key_id).revoked
    finally:
        vault.close()
    revoked = run("scan", "--revoke-managed", str(tree))
    assert revoked.exit_code == 1
    assert f"revoked virtual key {key_id}" in revoked.output
    assert "marked upstream credential 'default' version 1 compromised" in revoked.output
    _no_keys(shown.output + revoked.output, [up, token])
    vault = _vault(isolated_home)
    try:
        assert vault.get_key(key_id).revoked
        assert any(r.action == "upstream.compromised" for r in vault.audit.list())
        # no admin key: nothing rotated, but the version is marked compromised in the vault
        (version,) = vault.get_upstream("default").versions
        assert version.compromised and version.compromised_source == "scan"
        assert "app.py:1" in (version.compromised_reason or "")
    finally:
        vault.close()


def test_revoke_managed_works_on_base64_encoded_keys(tmp_path, managed_vault, isolated_home):
    """A Kubernetes Secret holding the managed keys base64-encoded: found, looked up in the
    vault by the decoded key, the virtual key revoked and the upstream version marked."""
    import base64

    up, key_id, token = managed_vault
    tree = tmp_path / "k8s"
    tree.mkdir()
    up_b64, token_b64 = (base64.b64encode(v.encode()).decode() for v in (up, token))
    (tree / "secret.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\ndata:\n  OPENAI_API_KEY: {up_b64}\n"
        f"  KEYGUARD_KEY: {token_b64}\n"
    )
    shown = run("scan", "--json", str(tree))
    findings = json.loads(shown.output)["findings"]
    assert [(f["line"], f["column"], f["encoding"]) for f in findings] == [
        (4, 19, "base64"),
        (5, 17, "base64"),
    ]
    managed_by = {f["format"]: f.get("managed") for f in findings}
    assert managed_by["openai-project"] == "upstream credential 'default' version 1, CURRENT"
    assert managed_by["keyguard-virtual-key"].startswith(f"virtual key {key_id}")
    sarif_file = tmp_path / "k8s.sarif"
    assert run("scan", "--sarif", "-o", str(sarif_file), str(tree)).exit_code == 1
    jsonschema.validate(json.loads(sarif_file.read_text()), SCHEMA)
    revoked = run("scan", "--revoke-managed", str(tree))
    assert revoked.exit_code == 1
    assert f"revoked virtual key {key_id}" in revoked.output
    assert "marked upstream credential 'default' version 1 compromised" in revoked.output
    _no_keys(shown.output + revoked.output + sarif_file.read_text(), [up, token, up_b64, token_b64])
    vault = _vault(isolated_home)
    try:
        assert vault.get_key(key_id).revoked
        (version,) = vault.get_upstream("default").versions
        assert version.compromised and "secret.yaml:4" in (version.compromised_reason or "")
    finally:
        vault.close()


def test_revoke_managed_without_a_vault_is_an_error(leaky):
    root, _ = leaky
    assert run("scan", "--revoke-managed", str(root)).exit_code == 3


def test_fix_to_vault(repo, rng, managed_vault, isolated_home):
    key = openai_key(rng)
    (repo / "app.py").write_text(f"import openai\nopenai.api_key = '{key}'\n")
    result = run("fix", "--to-vault", str(repo))
    assert result.exit_code == 0, result.output
    assert "stored as upstream credential 'openai-api-key'" in result.output
    assert "keyguard run --name OPENAI_API_KEY --upstream openai-api-key" in result.output
    assert not (repo / ".env").exists() and key not in (repo / "app.py").read_text()
    _no_keys(result.output, [key])
    vault = _vault(isolated_home)
    try:
        from keyguard.domain.keys import fingerprint

        assert vault.find_managed(fingerprint(key)).name == "openai-api-key"
    finally:
        vault.close()


def test_scanner_never_imports_the_gateways_dependencies(leaky, tmp_path):
    root, _ = leaky
    code = (
        "import sys\n"
        "from keyguard.cli.main import main\n"
        "try:\n"
        f"    main(['scan', '--json', '--verify', '--verify-base-url', 'http://127.0.0.1:9/v1',"
        f" {str(root)!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('httptools', 'uvloop', 'keyguard'))\n"
        "bad = [m for m in bad if m.startswith(('httptools', 'uvloop', 'keyguard.gateway'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_ignored_directory_says_so(repo, rng):
    (repo / ".gitignore").write_text("build/\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.js").write_text(f"k='{openai_key(rng)}'\n")
    quiet = run("scan", str(repo / "build"))
    assert quiet.exit_code == 0 and "git-ignored" in quiet.output
    assert run("scan", "--no-ignore", str(repo / "build")).exit_code == 1


def test_fix_to_vault_dry_run_plans_without_storing(repo, rng, managed_vault, isolated_home):
    key, vk = openai_key(rng), virtual_key(rng)
    (repo / "app.py").write_text(f"A = '{key}'\nB = '{vk}'\n")
    result = run("fix", "--to-vault", "--dry-run", "--json", str(repo))
    doc = json.loads(result.output)
    assert [e.split(" ")[0] for e in doc["planned_vault"]] == ["OPENAI_API_KEY"]
    assert [e.split("=")[0] for e in doc["planned_env"]] == ["OPENAI_API_KEY_2"]
    _no_keys(result.output, [key, vk])
    vault = _vault(isolated_home)
    try:
        from keyguard.domain.keys import fingerprint

        assert vault.find_managed(fingerprint(key)) is None
    finally:
        vault.close()


def test_fix_without_libcst_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_libcst(name, *args, **kwargs):
        if name == "libcst" or name.startswith("libcst."):
            raise ModuleNotFoundError("No module named 'libcst'", name="libcst")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith("keyguard.scanner.fix")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_libcst)
    result = run("fix", str(tmp_path))
    assert result.exit_code == 2 and "pip install libcst" in result.output


def test_hostile_file_names_are_printed_escaped(tmp_path, rng):
    """A file name with terminal escapes (cursor up, erase line) cannot hide its finding."""
    key = openai_key(rng)
    name = "x\x1b[1A\x1b[2K\u202ey.py"
    (tmp_path / name).write_text(f"k = '{key}'\n")
    text = run("scan", str(tmp_path))
    assert text.exit_code == 1
    assert "x\\x1b[1A\\x1b[2K\\u202ey.py" in text.output
    assert "\x1b" not in text.output and "\u202e" not in text.output
    doc = json.loads(run("scan", "--json", str(tmp_path)).output)
    assert [f["path"] for f in doc["findings"]] == [str(tmp_path / name)]  # JSON: exact
