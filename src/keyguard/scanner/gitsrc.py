"""Git sources: the staged index (pre-commit) and the whole history (every ref).

Both talk to ``git`` through two or three subprocesses whatever the size of the change:
``git diff --cached --raw`` + one ``git cat-file --batch`` for the index, and one streamed
``git log --all -p`` for history.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from keyguard.errors import ScanError
from keyguard.scanner.engine import scan_text
from keyguard.scanner.model import Finding, ScanReport, Skipped
from keyguard.scanner.runner import Scanner
from keyguard.scanner.walk import git_toplevel

_COMMIT = b"\x01commit "


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=False
        )
    except OSError as exc:
        raise ScanError(f"cannot run git: {exc}") from exc
    if out.returncode != 0:
        msg = os.fsdecode(out.stderr).strip().splitlines()
        raise ScanError(f"git {args[0]} failed: {msg[-1] if msg else out.returncode}")
    return out.stdout


def require_repo(path: Path) -> Path:
    """The work tree root of ``path``; :class:`ScanError` when it is not in a git repository."""
    top = git_toplevel(path)
    if top is None:
        raise ScanError(f"not a git repository: {path}")
    return top


def staged_blobs(repo: Path) -> Iterator[tuple[str, bytes]]:
    """``(path, content)`` of every file added, copied, modified or renamed in the index."""
    raw = _git(
        repo,
        "diff",
        "--cached",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "--diff-filter=ACMRT",
    )
    fields = raw.split(b"\0")
    entries: list[tuple[str, str]] = []
    for meta, name in zip(fields[0::2], fields[1::2], strict=False):
        parts = meta.split()
        if len(parts) >= 4 and parts[1] != b"160000":  # skip submodules
            entries.append((os.fsdecode(name), parts[3].decode()))
    if not entries:
        return
    batch = _git(
        repo, "cat-file", "--batch", stdin="".join(f"{sha}\n" for _, sha in entries).encode()
    )
    pos = 0
    for rel, _sha in entries:
        header_end = batch.index(b"\n", pos)
        size = int(batch[pos:header_end].split()[2])
        start = header_end + 1
        yield rel, batch[start : start + size]
        pos = start + size + 1


def scan_staged(scanner: Scanner, path: Path) -> ScanReport:
    """Scan the staged version of every changed file (what the next commit will contain)."""
    repo = require_repo(path)
    start = time.perf_counter()
    report = ScanReport()
    for rel, data in staged_blobs(repo):
        if len(data) > scanner.max_file_size:
            report.skipped.append(Skipped(rel, "too large"))
            continue
        report.files_scanned += 1
        report.bytes_scanned += len(data)
        report.findings.extend(scanner.scan_blob(data, rel, "staged"))
    report.seconds = time.perf_counter() - start
    report.sort()
    return report


def _unquote_path(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith('"') and text.endswith('"'):
        escaped = codecs.decode(text[1:-1], "unicode_escape")
        return escaped.encode("latin-1", "surrogateescape").decode("utf-8", "replace")
    return text


def scan_history(scanner: Scanner, path: Path) -> ScanReport:
    """Every key added by any commit reachable from any ref, each reported once (oldest)."""
    repo = require_repo(path)
    start = time.perf_counter()
    report = ScanReport(unit="commits")
    keywords = [k for d in scanner.detectors for k in d.keywords]
    cmd = [
        "git",
        "-C",
        str(repo),
        "-c",
        "core.quotepath=off",
        "log",
        "--all",
        "--reverse",
        "-p",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--format=tformat:%x01commit %H %aI",
    ]
    seen: set[str] = set()
    commit = date = file_path = None
    line_no = 0
    in_header = False
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(_COMMIT):
                _, commit_b, date_b = line.split()
                commit, date = commit_b.decode(), date_b.decode()
                report.files_scanned += 1
            elif line.startswith(b"diff --git "):
                in_header, file_path = True, None
            elif in_header and line.startswith(b"+++ "):
                target = line[4:].rstrip(b"\n")
                file_path = None if target == b"/dev/null" else _unquote_path(target)[2:]
            elif line.startswith(b"@@ "):
                new = line.split(b" ")[2]  # +start[,count]
                line_no = int(new[1:].split(b",")[0])
                in_header = False
            elif not in_header and line.startswith(b"+") and file_path is not None:
                report.bytes_scanned += len(line)
                if any(k in line for k in keywords):
                    text = line[1:].decode("utf-8", "surrogateescape")
                    for m in scan_text(text, scanner.detectors):
                        f = Finding.from_raw(
                            m._replace(line=line_no),
                            file_path,
                            "history",
                            commit=commit,
                            author_date=date,
                        )
                        if f.fingerprint not in seen:
                            seen.add(f.fingerprint)
                            report.findings.append(f)
                line_no += 1
        stderr = proc.stderr.read() if proc.stderr else b""
    if proc.returncode not in (0, None) and b"does not have any commits" not in stderr:
        raise ScanError(f"git log failed: {os.fsdecode(stderr).strip()[:200]}")
    report.seconds = time.perf_counter() - start
    report.sort()
    return report
