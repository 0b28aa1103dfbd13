"""--history and --staged on real temporary git repositories."""

from __future__ import annotations

import time

import pytest

from keyguard.domain.keys import fingerprint
from keyguard.errors import ScanError
from keyguard.scanner.gitsrc import scan_history, scan_staged
from scanner.gitutil import git
from scanner.keygen import openai_key, virtual_key


def test_history_finds_deleted_keys_and_unmerged_branches(repo, scanner, rng):
    old, branch_only, current = openai_key(rng, "user"), virtual_key(rng), openai_key(rng)
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init", date="2020-01-01T00:00:00+00:00")
    (repo / "app.py").write_text(f"x = 1\nKEY = '{old}'\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "add key", date="2021-02-03T04:05:06+00:00")
    added_in = git(repo, "rev-parse", "HEAD")
    (repo / "app.py").write_text("x = 1\n")
    git(repo, "commit", "-qam", "remove key")
    git(repo, "checkout", "-qb", "feature")
    (repo / "sub").mkdir()
    (repo / "sub" / "conf.yaml").write_text(f"a: 1\nb: 2\nkey: {branch_only}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "feature")
    git(repo, "checkout", "-q", "main")
    (repo / "new.py").write_text(f"K = '{current}'\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "current")
    # the same key committed again elsewhere is still reported once
    (repo / "again.py").write_text(f"K = '{current}'\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "again")

    report = scan_history(scanner, repo)
    by_fp = {f.fingerprint: f for f in report.findings}
    assert len(report.findings) == 3
    deleted = by_fp[fingerprint(old)]
    assert (deleted.path, deleted.line, deleted.commit) == ("app.py", 2, added_in)
    assert deleted.author_date.startswith("2021-02-03T04:05:06")
    assert deleted.source == "history" and "rotate" in deleted.remedy
    branch = by_fp[fingerprint(branch_only)]
    assert (branch.path, branch.line) == ("sub/conf.yaml", 3)
    assert by_fp[fingerprint(current)].path == "new.py"
    assert report.unit == "commits" and report.files_scanned == 6


def test_history_of_repo_without_commits_is_clean(repo, scanner):
    assert scan_history(scanner, repo).findings == []


def test_not_a_repository_is_a_scan_error(tmp_path, scanner):
    with pytest.raises(ScanError, match="not a git repository"):
        scan_staged(scanner, tmp_path)


def test_staged_scans_the_index_not_the_worktree(repo, scanner, rng):
    staged_key, unstaged_key = openai_key(rng), openai_key(rng, "svcacct")
    (repo / "base.txt").write_text("base\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    (repo / "a.py").write_text(f"K = '{staged_key}'\n")
    (repo / "b.py").write_text("clean\n")
    git(repo, "add", "a.py", "b.py")
    (repo / "b.py").write_text(f"K = '{unstaged_key}'\n")  # modified after staging
    (repo / "c.py").write_text(f"K = '{unstaged_key}'\n")  # never staged
    report = scan_staged(scanner, repo)
    assert [(f.path, f.fingerprint, f.source) for f in report.findings] == [
        ("a.py", fingerprint(staged_key), "staged")
    ]
    assert report.files_scanned == 2


def test_staged_skips_large_files_with_the_tree_scans_note(repo, rng):
    from keyguard.scanner.runner import Scanner

    (repo / "big.txt").write_text(openai_key(rng) + "\n" + "x" * (2 * 1024 * 1024))
    git(repo, "add", ".")
    scanner = Scanner(jobs=1, max_file_size=1024 * 1024)
    staged = scan_staged(scanner, repo)
    tree = scanner.scan_files(repo, ["big.txt"])
    assert staged.findings == tree.findings == []
    assert [s.reason for s in staged.skipped] == [s.reason for s in tree.skipped]
    assert staged.skipped[0].reason == "larger than 1 MiB"


def test_staged_in_a_fresh_repo_and_a_typical_commit_is_fast(repo, scanner, rng):
    for i in range(10):
        (repo / f"m{i}.py").write_text("import os\n" * 300)
    (repo / "k.env").write_text(f"OPENAI_API_KEY={openai_key(rng)}\n")
    git(repo, "add", ".")
    start = time.perf_counter()
    report = scan_staged(scanner, repo)
    elapsed = time.perf_counter() - start
    assert len(report.findings) == 1 and report.files_scanned == 11
    assert elapsed < 1.0  # generous for CI; the bench measures the real figure


def test_history_line_numbers_paths_and_odd_content(repo, scanner, rng):
    keys = [openai_key(rng), virtual_key(rng), openai_key(rng, "admin"), openai_key(rng)]
    lines = [f"line {i}" for i in range(1, 51)]
    (repo / "big.txt").write_text("\n".join(lines) + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    lines[9] = "line 10 changed"  # hunk 1
    lines.insert(29, f"++ {keys[0]}")  # hunk 2: a content line that starts with '++'
    del lines[45]  # hunk 3: a deletion after it
    lines.insert(47, f"key={keys[1]}")
    (repo / "big.txt").write_text("\n".join(lines) + "\n")
    odd = repo / "dir with spaces" / "naïve ☃.py"
    odd.parent.mkdir()
    odd.write_text(f"K = '{keys[2]}'\n")
    (repo / "deleted.txt").write_text("x\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "multi-hunk")
    (repo / "deleted.txt").unlink()
    (repo / "pkg_resources_user.py").write_text("import pkg_resources\n" * 3 + keys[3] + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more")
    report = scan_history(scanner, repo)
    where = {f.fingerprint: (f.path, f.line) for f in report.findings}
    assert where == {
        fingerprint(keys[0]): ("big.txt", 30),
        fingerprint(keys[1]): ("big.txt", 48),
        fingerprint(keys[2]): ("dir with spaces/naïve ☃.py", 1),
        fingerprint(keys[3]): ("pkg_resources_user.py", 4),
    }
    assert report.files_scanned == 4
    new_lines = (repo / "big.txt").read_text().splitlines()
    assert keys[0] in new_lines[29] and keys[1] in new_lines[47]


def test_history_sections_split_across_reads():
    import io

    from keyguard.scanner.gitdiff import sections as _sections

    body = b"\x01commit a d\n\n" + b"".join(
        b"diff --git a/f%d b/f%d\n+++ b/f%d\n@@ -0,0 +1 @@\n+x\n" % (i, i, i) for i in range(50)
    )
    for block in (1, 7, 13, 4096):
        parts = list(_sections(io.BytesIO(body), block=block))
        assert b"".join(parts) == body
        assert len(parts) == 51


def test_history_finds_keys_in_commit_messages(repo, scanner, rng):
    key = openai_key(rng)
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", f"rotate\n\nold key was {key}, now revoked")
    [f] = scan_history(scanner, repo).findings
    assert (f.path, f.line, f.fingerprint) == ("<commit message>", 3, fingerprint(key))
    assert f.commit == git(repo, "rev-parse", "HEAD")


def test_history_runs_detectors_without_keywords(repo):
    import re

    from keyguard.scanner.detectors import Detector
    from keyguard.scanner.runner import Scanner

    class Bare(Detector):
        name = "bare"
        pattern = re.compile(r"zz-[0-9]{8}")

        def classify(self, value):
            return ("bare-token", "low")

    (repo / "a.txt").write_text("one\nt = zz-12345678\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "add\n\nold token zz-87654321")
    report = scan_history(Scanner([Bare()], jobs=1), repo)
    assert [(f.format, f.path, f.line) for f in report.findings] == [
        ("bare-token", "<commit message>", 3),
        ("bare-token", "a.txt", 2),
    ]


def test_staged_binary_blobs_are_skipped_like_in_a_tree_scan(repo, scanner, rng):
    key = openai_key(rng)
    # a NUL in the first 8 KiB: binary to the tree scan; the key inside must not count either
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + key.encode() + b"\x00" * 64)
    (repo / "app.py").write_text(f"K = '{key}'\n")
    git(repo, "add", ".")
    staged = scan_staged(scanner, repo)
    tree = scanner.scan_files(repo, ["app.py", "logo.png"])
    for report in (staged, tree):
        assert [(s.path, s.reason) for s in report.skipped] == [("logo.png", "binary")]
        assert report.files_scanned == 1
        assert report.bytes_scanned == (repo / "app.py").stat().st_size
        assert [f.path for f in report.findings] == ["app.py"]


def test_history_lists_binary_files_as_skipped_once(repo, scanner, rng):
    key = openai_key(rng)
    (repo / "logo.png").write_bytes(b"\x89PNG\x00\x00" + key.encode())
    (repo / "dir with spaces").mkdir()
    # (two bytes such as b"\x00\x01" would be UTF-16 text by the tree scans' NUL-pattern rule)
    (repo / "dir with spaces" / "a and b.bin").write_bytes(b"\x7fELF\x00\x00\x01\x02")
    (repo / "tab\tname.bin").write_bytes(b"\x7fELF\x00\x00\x02\x03")
    (repo / "app.py").write_text(f"K = '{key}'\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    (repo / "logo.png").write_bytes(b"\x89PNG\x00\x01" + key.encode())
    (repo / "tab\tname.bin").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")
    report = scan_history(scanner, repo)
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("dir with spaces/a and b.bin", "binary"),
        ("logo.png", "binary"),
        ("tab\tname.bin", "binary"),
    ]
    assert [f.path for f in report.findings] == ["app.py"]
    assert report.unit == "commits" and report.files_scanned == 2
