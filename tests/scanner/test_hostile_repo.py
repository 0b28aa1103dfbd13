"""A scanned repository is untrusted: its config must not make keyguard run programs, and its
symbolic links must not make keyguard read files outside it (CI scans strangers' pull requests).
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from keyguard.errors import ScanError
from keyguard.scanner.gitsrc import scan_history, scan_staged
from keyguard.scanner.walk import list_files
from scanner.gitutil import GIT_ENV, git
from scanner.keygen import openai_key


def _trap(tmp_path):
    """A program that leaves a mark when run, and the mark's path."""
    mark = tmp_path / "ran"
    script = tmp_path / "trap.sh"
    script.write_text(f"#!/bin/sh\ntouch '{mark}'\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), mark


def test_tree_and_staged_scans_do_not_run_core_fsmonitor(repo, tmp_path, scanner, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", os.devnull)
    program, mark = _trap(tmp_path)
    (repo / "a.txt").write_text("hello\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    (repo / "b.txt").write_text("world\n")
    git(repo, "add", "b.txt")
    git(repo, "config", "core.fsmonitor", program)
    scanner.scan_files(repo, list_files(repo))
    scan_staged(scanner, repo)
    assert not mark.exists()


def test_history_scan_does_not_run_gpg_program(repo, tmp_path, scanner, monkeypatch):
    """``log.showSignature`` in the repo's config makes ``git log`` run ``gpg.program`` for each
    signed commit."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", os.devnull)
    program, mark = _trap(tmp_path)
    (repo / "a.txt").write_text("hello\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "one")
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    signed = (
        f"tree {tree}\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n"
        "gpgsig -----BEGIN PGP SIGNATURE-----\n \n x\n -----END PGP SIGNATURE-----\n\nsigned\n"
    )
    commit = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=signed,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()
    git(repo, "update-ref", "refs/heads/signed", commit)
    git(repo, "config", "log.showSignature", "true")
    git(repo, "config", "gpg.program", program)
    report = scan_history(scanner, repo)
    assert report.files_scanned == 2
    assert not mark.exists()


def test_tracked_symlink_to_a_file_outside_the_repo_is_not_read(repo, tmp_path, scanner, rng):
    outside = tmp_path / "outside.env"
    outside.write_text(f"OPENAI_API_KEY={openai_key(rng)}\n")
    (repo / "inside.txt").write_text("nothing here\n")
    (repo / "link.txt").symlink_to(outside)
    (repo / "proc.txt").symlink_to("/proc/self/environ")
    git(repo, "add", "inside.txt", "link.txt", "proc.txt")
    report = scanner.scan_files(repo, list_files(repo))
    assert [f.fingerprint for f in report.findings] == []
    assert report.files_scanned == 1


@pytest.mark.parametrize(
    ("link", "dangling"), [(".env", False), (".env", True), (".gitignore", False)]
)
def test_fix_never_writes_through_a_symlink_out_of_the_repo(
    repo, tmp_path, scanner, rng, link, dangling
):
    """A repository that ships ``.env`` or ``.gitignore`` as a symlink (maybe dangling) must not
    make ``keyguard fix`` append to, create or chmod a file outside it."""
    from keyguard.scanner.fix.fixer import fix_findings

    outside = tmp_path / "victim"
    if not dangling:
        outside.write_text("untouched\n")
        outside.chmod(0o644)
    (repo / link).symlink_to(outside)
    source = f'KEY = "{openai_key(rng)}"\n'
    (repo / "app.py").write_text(source)
    findings = scanner.scan_files(repo, list_files(repo)).findings
    assert len(findings) == 1
    with pytest.raises(ScanError, match="symbolic link"):
        fix_findings(repo, findings)
    if dangling:
        assert not outside.exists()
    else:
        assert outside.read_text() == "untouched\n"
        assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert (repo / "app.py").read_text() == source  # nothing changed before the refusal


@pytest.mark.parametrize("depth", [900, 995, 100_000])
def test_deeply_nested_notebook_json_does_not_crash_the_scan(repo, scanner, rng, depth):
    """A notebook whose JSON nests too deep for Python's parser (or its own walk) is scanned
    as text: its keys are still reported, with no cell."""
    key = openai_key(rng)
    nested = "[" * depth + "]" * depth
    (repo / "deep.ipynb").write_text(
        '{"cells": [{"cell_type": "code", "source": ["k = \'%s\'"], "outputs": %s}]}'
        % (key, nested)
    )
    report = scanner.scan_files(repo, ["deep.ipynb"])
    assert [f.fingerprint for f in report.findings] == [
        f.fingerprint for f in scanner.scan_blob(key.encode(), "k.txt")
    ]


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "salt": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000],
    ids=["not-utf8", "deep"],
)
def test_a_malformed_baseline_is_a_scan_error_not_a_crash(tmp_path, content):
    """The baseline usually lives in the scanned repository: a pull request can break it."""
    from keyguard.scanner import baseline

    path = tmp_path / "baseline.json"
    path.write_bytes(content)
    with pytest.raises(ScanError, match="baseline"):
        baseline.load(path)
