"""What a tree scan reads: .gitignore respected (git or our matcher), binary and huge files
skipped with a note, dotfiles and files without extension read."""

from __future__ import annotations

import pytest

from keyguard.errors import ScanError
from keyguard.scanner.gitignore import IgnoreMatcher, parse
from keyguard.scanner.runner import Scanner
from keyguard.scanner.walk import list_files
from scanner.gitutil import git
from scanner.keygen import openai_key


def _layout(root, key):
    (root / ".gitignore").write_text("build/\n*.log\n!keep.log\n/top.txt\nsub/**/deep.txt\n")
    for rel in [
        "a.py",
        "build/x.py",
        "x.log",
        "keep.log",
        "top.txt",
        "sub/top.txt",
        "sub/a/b/deep.txt",
        ".hidden",
        "noext",
        "sub/.gitignore",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"k = {key}\n" if rel != "sub/.gitignore" else "*.tmp\n")
    (root / "sub" / "junk.tmp").write_text(f"{key}\n")


EXPECTED = {".gitignore", "a.py", "keep.log", "sub/top.txt", ".hidden", "noext", "sub/.gitignore"}


def test_gitignore_without_git(tmp_path, rng):
    _layout(tmp_path, openai_key(rng))
    assert set(list_files(tmp_path)) == EXPECTED


def test_gitignore_with_git_matches_our_matcher(repo, rng):
    _layout(repo, openai_key(rng))
    git(repo, "init", "-q")
    assert set(list_files(repo)) == EXPECTED


def test_no_ignore_reads_everything_but_dot_git(repo, rng):
    _layout(repo, openai_key(rng))
    files = set(list_files(repo, respect_ignore=False))
    assert "build/x.py" in files and "sub/junk.tmp" in files
    assert not any(f.startswith(".git/") for f in files)


def test_missing_path_is_a_scan_error(tmp_path):
    with pytest.raises(ScanError):
        list_files(tmp_path / "nope")


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("*.py", "a/b/c.py", False, True),
        ("/a.py", "sub/a.py", False, False),
        ("doc/*.md", "doc/x.md", False, True),
        ("doc/*.md", "doc/sub/x.md", False, False),
        ("**/cache", "x/y/cache", True, True),
        ("out/", "out", False, False),
        ("a?c", "abc", False, True),
        ("[ab].txt", "b.txt", False, True),
    ],
)
def test_matcher_rules(pattern, path, is_dir, ignored):
    m = IgnoreMatcher()
    m.rules = parse(pattern, "")
    assert m.ignored(path, is_dir) is ignored


def test_binary_and_huge_files_are_skipped_with_a_note(tmp_path, rng):
    key = openai_key(rng)
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + key.encode())
    (tmp_path / "big.txt").write_text(key + "\n" + "x" * 2_000_000)
    (tmp_path / "ok.txt").write_text(key)
    report = Scanner(jobs=1, max_file_size=1_000_000).scan_files(
        tmp_path, ["img.png", "big.txt", "ok.txt"]
    )
    assert {(s.path, s.reason) for s in report.skipped} == {
        ("img.png", "binary"),
        ("big.txt", "larger than 1000000 bytes"),
    }
    assert [f.path for f in report.findings] == ["ok.txt"]


def _tree(root, rng, n=12):
    keys = []
    for i in range(n):
        key = openai_key(rng)
        keys.append(key)
        (root / f"f{i}.py").write_text(f"K = '{key}'\n")
    return [f"f{i}.py" for i in range(n)], keys


@pytest.mark.parametrize("fork", [True, False])
def test_parallel_paths_find_the_same_keys(tmp_path, rng, monkeypatch, fork):
    from keyguard.scanner import runner

    rels, keys = _tree(tmp_path, rng)
    monkeypatch.setattr(runner, "PARALLEL_THRESHOLD", 2)
    monkeypatch.setattr(runner, "BATCH_FILES", 3)
    monkeypatch.setattr(runner, "_fork_is_safe", lambda: fork)
    report = Scanner(jobs=2).scan_files(tmp_path, rels)
    assert sorted(f.secret.reveal() for f in report.findings) == sorted(keys)
    assert report.files_scanned == len(rels)


@pytest.mark.parametrize("fork", [True, False])
def test_parallel_paths_use_the_scanners_detectors(tmp_path, rng, monkeypatch, fork):
    from keyguard.scanner import runner
    from keyguard.scanner.detectors import OpenAIKeyDetector
    from scanner.keygen import virtual_key

    rels, keys = _tree(tmp_path, rng, 6)
    (tmp_path / "vk.txt").write_text(virtual_key(rng) + "\n")
    monkeypatch.setattr(runner, "PARALLEL_THRESHOLD", 2)
    monkeypatch.setattr(runner, "BATCH_FILES", 3)
    monkeypatch.setattr(runner, "_fork_is_safe", lambda: fork)
    report = Scanner([OpenAIKeyDetector()], jobs=2).scan_files(tmp_path, [*rels, "vk.txt"])
    assert sorted(f.secret.reveal() for f in report.findings) == sorted(keys)


def test_a_failing_worker_is_a_scan_error(tmp_path, rng, monkeypatch):
    from keyguard.scanner import runner

    rels, _ = _tree(tmp_path, rng, 4)
    monkeypatch.setattr(runner, "PARALLEL_THRESHOLD", 2)

    def boom(*args):
        raise RuntimeError("worker bug")

    monkeypatch.setattr(runner, "scan_file", boom)
    # the patched function exists only in this process: test the fork path, whose children
    # inherit it (other tests may leave threads running, which would select the spawn path)
    monkeypatch.setattr(runner, "_fork_is_safe", lambda: True)
    with pytest.raises(ScanError, match="worker"):
        Scanner(jobs=2).scan_files(tmp_path, rels)


def test_special_files_do_not_hang_the_scan(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe")
    report = Scanner(jobs=1).scan_files(tmp_path, ["pipe"])
    assert report.findings == [] and report.skipped == []
