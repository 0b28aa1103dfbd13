"""Store values in a ``.env`` file without ever losing or clobbering one.

The file is created with mode 0600 (and tightened to 0600 if it was looser); values are
appended with ``O_APPEND`` and fsynced before any source file is changed; a variable name that
already holds a *different* value is never reused: the next free ``NAME_2``, ``NAME_3``… is
picked instead, and a value already stored under some name is reused as is.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from dotenv import dotenv_values

from keyguard.domain.secret import Secret
from keyguard.scanner.gitblobs import git_cmd

_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.~+/=-]+\Z")


class EnvFile:
    """Plans names for values, then appends the new ones in one go (:meth:`commit`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existing = dotenv_values(path) if path.exists() else {}
        self.values: dict[str, str] = {k: v for k, v in existing.items() if v is not None}
        self.pending: dict[str, str] = {}

    def name_for(self, value: str, hint: str | None, default: str = "OPENAI_API_KEY") -> str:
        """The variable that holds (or will hold) ``value``; plans an append if needed."""
        for name, held in {**self.values, **self.pending}.items():
            if held == value:
                return name
        base = hint or default
        name, n = base, 1
        while name in self.values or name in self.pending:
            n += 1
            name = f"{base}_{n}"
        self.pending[name] = value
        return name

    def planned_lines(self) -> list[str]:
        """The lines :meth:`commit` will append, with each value redacted (for --dry-run)."""
        return [f"{name}={Secret(v, register=False).redacted}" for name, v in self.pending.items()]

    def commit(self) -> list[str]:
        """Append the planned variables durably; return their names."""
        if not self.pending:
            return []
        for value in self.pending.values():
            if not _SAFE_VALUE.match(value):
                raise ValueError("refusing to write a value that would need quoting")
        # O_NOFOLLOW: never append to (or create) a file a symlink points to
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                os.fchmod(fd, 0o600)
            prefix = "" if _ends_with_newline(self.path) else "\n"
            body = prefix + "".join(f"{k}={v}\n" for k, v in self.pending.items())
            os.write(fd, body.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        names = list(self.pending)
        self.values.update(self.pending)
        self.pending.clear()
        return names


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True


def is_ignored(root: Path, name: str = ".env") -> bool:
    """Whether git (or, outside a repository, the root ``.gitignore``) ignores ``root/name``."""
    try:
        out = subprocess.run(
            git_cmd(root, "check-ignore", "-q", name), capture_output=True, check=False
        )
        if out.returncode in (0, 1):
            return out.returncode == 0
    except OSError:
        pass
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        return False
    text = gitignore.read_text(encoding="utf-8", errors="replace")
    lines = {ln.strip() for ln in text.splitlines()}
    return bool(lines & {name, f"/{name}", f"{name}*", f"/{name}*", "*.env"})


def ensure_ignored(root: Path, name: str = ".env") -> bool:
    """Add ``name`` to ``root/.gitignore`` unless already ignored; True if the file changed."""
    if is_ignored(root, name):
        return False
    gitignore = root / ".gitignore"
    prefix = "" if _ends_with_newline(gitignore) else "\n"
    with open(gitignore, "a", encoding="utf-8") as fh:
        fh.write(f"{prefix}# secrets moved out of the code by keyguard fix\n{name}\n")
    return True
