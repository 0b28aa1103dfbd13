"""Which files a tree scan reads: git's view of the tree, or a walk with ``.gitignore`` rules."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from keyguard.errors import ScanError
from keyguard.scanner.gitblobs import git_cmd
from keyguard.scanner.gitignore import IgnoreMatcher

ALWAYS_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})


def git_toplevel(path: Path) -> Path | None:
    """The root of the git work tree containing ``path``, or ``None``."""
    start = path if path.is_dir() else path.parent
    try:
        out = subprocess.run(
            git_cmd(start, "rev-parse", "--show-toplevel"),
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    return Path(os.fsdecode(out.stdout.strip()))


def list_files(root: Path, *, respect_ignore: bool = True) -> list[str]:
    """Relative posix paths of the regular files under ``root`` that a scan should read."""
    if not root.exists():
        raise ScanError(f"no such file or directory: {root}")
    if root.is_file():
        return [root.name]
    if respect_ignore and git_toplevel(root) is not None:
        return _git_files(root)
    return _walk(root, IgnoreMatcher() if respect_ignore else None)


def _git_files(root: Path) -> list[str]:
    out = subprocess.run(
        git_cmd(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"),
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise ScanError(f"git ls-files failed in {root}: {os.fsdecode(out.stderr).strip()}")
    # no stat per file here: tracked files deleted from the work tree and submodule directories
    # are dropped by the reader (scan_file), which has to open each file anyway
    return list(dict.fromkeys(os.fsdecode(raw) for raw in out.stdout.split(b"\0") if raw))


def _walk(root: Path, matcher: IgnoreMatcher | None) -> list[str]:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        if matcher is not None:
            matcher.load(root, rel_dir)
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_SKIPPED_DIRS or os.path.islink(os.path.join(dirpath, name)):
                continue
            if matcher is not None and matcher.ignored(rel, True):
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full) or os.path.islink(full):
                continue
            if matcher is not None and matcher.ignored(rel, False):
                continue
            files.append(rel)
    return files
