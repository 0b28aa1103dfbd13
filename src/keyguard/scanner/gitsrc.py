"""Git sources: the staged index (pre-commit) and the whole history (every ref).

Both talk to ``git`` through two or three subprocesses whatever the size of the change:
``git diff --cached --raw`` + one ``git cat-file --batch`` for the index, and one streamed
``git log --all -p`` for history (plus, when it shows binary files, one ``cat-file`` for their
blobs: UTF-16 text is binary to git; see :mod:`keyguard.scanner.gitblobs`).
"""

from __future__ import annotations

import codecs
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from keyguard.errors import ScanError
from keyguard.scanner import concat
from keyguard.scanner.encoded import ANCHORS, might_hold
from keyguard.scanner.engine import scan_text
from keyguard.scanner.gitblobs import BinaryVersion, blob_id, blob_sizes, read_blobs
from keyguard.scanner.model import Finding, RawMatch, ScanReport, Skipped
from keyguard.scanner.runner import Scanner, scan_data, too_large
from keyguard.scanner.walk import git_toplevel

_COMMIT = b"\x01commit "
_BINARY = b"\nBinary files "


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
    # counted like a tree scan: binary and oversized blobs are skipped (listed), not scanned
    report = scanner.scan_blobs(staged_blobs(repo), "staged")
    report.seconds = time.perf_counter() - start  # including git's time
    return report


def _unquote_path(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith('"') and text.endswith('"'):
        escaped = codecs.decode(text[1:-1], "unicode_escape")
        return escaped.encode("latin-1", "surrogateescape").decode("utf-8", "replace")
    return text


class _HistoryParser:
    """Turns ``git log -p -U0`` output into findings, one file diff ("section") at a time.

    A section without any detector keyword is not parsed line by line: only its last commit
    header (if any) is read. That keeps Python's share of a history scan small next to git's.
    A detector without keywords (a plugin may have none) makes every added line worth reading,
    as it always runs in a tree scan (:func:`keyguard.scanner.engine.select`).
    """

    def __init__(self, scanner: Scanner, report: ScanReport) -> None:
        self.detectors = scanner.detectors
        self.keywords = [k for d in scanner.detectors for k in d.keywords]
        self.scan_all = any(not d.keywords for d in scanner.detectors)
        self.report = report
        self.max_size = scanner.max_file_size
        #: fingerprint -> (commit ordinal, index in report.findings): each key once, oldest
        self.seen: dict[str, tuple[int, int]] = {}
        self.binary: set[str] = set()  # paths listed as skipped
        self.versions: list[BinaryVersion] = []  # binary to git: read after the log
        self.commit: str | None = None
        self.date: str | None = None
        self.ordinal = 0  # position of the current commit in the log (oldest first)

    def _wanted(self, data: bytes) -> bool:
        """Could ``data`` hold a key: does it contain a keyword (or is any detector keyless)?"""
        return self.scan_all or any(k in data for k in self.keywords)

    def _header(self, line: bytes) -> None:
        _, commit, date = line.split()[:3]
        self.commit, self.date = commit.decode(), date.decode()

    def feed(self, section: bytes) -> None:
        """One chunk of output that starts at a ``diff --git`` line (or at the very start).

        A section's diff lines belong to the commit current when it starts; a commit header
        in it (always after the diff lines) applies to the following sections.
        """
        self.report.bytes_scanned += len(section)
        self.ordinal = self.report.files_scanned  # the commit these diff lines belong to
        self.report.files_scanned += section.count(b"\n" + _COMMIT) + section.startswith(_COMMIT)
        if self._wanted(section):
            self._scan_section(section, encoded=might_hold(section))
        elif might_hold(section):  # a base64-encoded key: look at the lines with an anchor
            self._scan_section(section, encoded=True)
        if concat.might_hold(section):  # a key split over literals, maybe across lines
            self._scan_joined(section)
        self._note_binary(section)
        last = section.rfind(b"\n" + _COMMIT)
        if last >= 0 or section.startswith(_COMMIT):
            begin = last + 1 if last >= 0 else 0
            end = section.find(b"\n", begin)
            self._header(section[begin : end if end >= 0 else len(section)])

    def _note_binary(self, section: bytes) -> None:
        """Note a file version git shows no text for: its blob is read after the log (it may
        be UTF-16 text). Deletions add nothing and are not noted."""
        hunk = section.find(b"\n@@ ")
        at = section.find(_BINARY, 0, hunk if hunk >= 0 else len(section))
        if at < 0:
            return
        end = section.find(b"\n", at + 1)
        line = section[at + len(_BINARY) : end if end >= 0 else len(section)]
        if not line.endswith(b" differ") or line.endswith(b" and /dev/null differ"):
            return
        pair = line[: -len(b" differ")]
        if pair.startswith(b"/dev/null and "):
            raw = pair[len(b"/dev/null and ") :]
        else:  # "a/P and b/P": the same path twice (--no-renames), quoted alike
            raw = pair[len(pair) - (len(pair) - len(b" and ")) // 2 :]
        path = _unquote_path(raw)[2:]
        blob = blob_id(section, at + 1)
        if blob is None:
            self._skip(path, "binary")
        else:
            self.versions.append(BinaryVersion(self.ordinal, self.commit, self.date, path, blob))

    def _skip(self, path: str, reason: str) -> None:
        """List a file the history scan did not read, once per path."""
        if path not in self.binary:
            self.binary.add(path)
            self.report.skipped.append(Skipped(path, reason))

    def scan_binary(self, repo: Path) -> None:
        """Read every noted binary version (each blob once, up to the size limit) and scan
        the UTF-16 ones; list the others as skipped, as a tree scan lists binary files."""
        first: dict[str, BinaryVersion] = {}
        for version in self.versions:
            first.setdefault(version.blob, version)
        sizes = blob_sizes(repo, first)
        wanted = []
        for blob, version in first.items():
            if sizes.get(blob, 0) > self.max_size:
                self._skip(version.path, too_large(self.max_size))
            else:
                wanted.append(blob)
        for blob, data in read_blobs(repo, wanted):
            version = first[blob]
            _, matches, reason, nbytes = scan_data(data, version.path, self.detectors)
            if reason is not None:
                self._skip(version.path, reason)
            else:
                self.report.bytes_scanned += nbytes
            for m in matches:
                self._record(m, version.path, version.ordinal, version.commit, version.date)

    def _scan_section(self, section: bytes, *, encoded: bool = False) -> None:
        """Look only at the added lines that contain a keyword (or, when ``encoded``, an
        anchor of a base64-encoded key); locate them by counting."""
        target = self._target(section)
        if target is None:
            return
        first_hunk, file_path = target
        done: set[int] = set()
        # every added line starts with '+': with scan_all, each one is a hit
        keywords = [b"+"] if self.scan_all else self.keywords + list(ANCHORS if encoded else ())
        for keyword in keywords:
            hit = section.find(keyword, first_hunk)
            while hit >= 0:
                start = section.rfind(b"\n", 0, hit) + 1
                if start not in done and section.startswith(b"+", start):
                    done.add(start)
                    end = section.find(b"\n", start)
                    line = section[start + 1 : end if end >= 0 else len(section)]
                    self._found(line, file_path, self._line_number(section, start))
                hit = section.find(keyword, hit + len(keyword))

    @staticmethod
    def _target(section: bytes) -> tuple[int, str] | None:
        """``(offset of the first hunk, path)`` of a diff that adds lines, else ``None``."""
        first_hunk = section.find(b"\n@@ ")
        target = section.find(b"\n+++ ", 0, first_hunk)
        if first_hunk < 0 or target < 0:
            return None  # binary, mode change only, ...
        # git appends a tab to names that contain a space ("+++ b/a b.txt\t")
        raw_path = section[target + 5 : section.find(b"\n", target + 1)].rstrip(b"\t")
        if raw_path == b"/dev/null":
            return None  # a deletion adds nothing
        return first_hunk, _unquote_path(raw_path)[2:]

    def _scan_joined(self, section: bytes) -> None:
        """Keys split over string literals joined across lines: each run of consecutive added
        lines around a hit of the concatenation prefilter is scanned as one text."""
        target = self._target(section)
        if target is None:
            return
        first_hunk, file_path = target
        done = first_hunk
        for hit in concat.hits(section, first_hunk):
            start = section.rfind(b"\n", 0, hit) + 1
            if hit < done or not section.startswith(b"+", start):
                continue
            begin = start
            while (prev := section.rfind(b"\n", 0, begin - 1) + 1) > first_hunk:
                if not section.startswith(b"+", prev):
                    break
                begin = prev
            end = section.find(b"\n", start)
            while end >= 0 and section.startswith(b"+", end + 1):
                end = section.find(b"\n", end + 1)
            end = end if end >= 0 else len(section)
            done = end
            lines = [line[1:] for line in section[begin:end].split(b"\n")]
            text = b"\n".join(lines).decode("utf-8", "surrogateescape")
            first = self._line_number(section, begin)
            for m in scan_text(text, (), base64_detectors=(), concat_detectors=self.detectors):
                line_no = first + m.line - 1
                self._record(
                    m._replace(line=line_no), file_path, self.ordinal, self.commit, self.date
                )

    @staticmethod
    def _line_number(section: bytes, start: int) -> int:
        """New-file line number of the added line at ``start`` (-U0: hunks hold only +/-)."""
        hunk = section.rfind(b"\n@@ ", 0, start)
        new = section[hunk + 1 : section.find(b"\n", hunk + 1)].split(b" ")[2]  # +start[,n]
        return int(new[1:].split(b",")[0]) + section.count(b"\n+", hunk + 1, start)

    def scan_messages(self, repo: Path) -> None:
        """Keys in commit messages ("old key was sk-…"), reported as ``<commit message>``."""
        out = _git(repo, "log", "--all", "--reverse", "--format=%x01%H %aI%n%B")
        for record in out.split(b"\x01")[1:]:
            header, _, message = record.partition(b"\n")
            if self._wanted(message):
                self._header(_COMMIT + header)
                for number, line in enumerate(message.split(b"\n"), start=1):
                    if self._wanted(line):
                        self._found(line, "<commit message>", number)

    def _found(self, raw: bytes, file_path: str, line_no: int) -> None:
        text = raw.decode("utf-8", "surrogateescape")
        for m in scan_text(text, self.detectors):
            self._record(m._replace(line=line_no), file_path, self.ordinal, self.commit, self.date)

    def _record(
        self, m: RawMatch, path: str, ordinal: int, commit: str | None, date: str | None
    ) -> None:
        """Each key once: at the oldest commit that added it (binary blobs are read after the
        log, so a key they hold may replace a finding from a later commit)."""
        f = Finding.from_raw(m, path, "history", commit=commit, author_date=date)
        known = self.seen.get(f.fingerprint)
        if known is None:
            self.seen[f.fingerprint] = (ordinal, len(self.report.findings))
            self.report.findings.append(f)
        elif ordinal < known[0]:
            self.seen[f.fingerprint] = (ordinal, known[1])
            self.report.findings[known[1]] = f


def _sections(stream: IO[bytes], block: int = 1 << 20) -> Iterator[bytes]:
    """Split a byte stream at every ``\ndiff --git `` without holding more than one section."""
    sep = b"\ndiff --git "
    pending: list[bytes] = []
    tail = b""
    while chunk := stream.read(block):
        data = tail + chunk
        pos = 0
        while (cut := data.find(sep, pos)) >= 0:
            pending.append(data[pos : cut + 1])
            yield b"".join(pending)
            pending = []
            pos = cut + 1
        # keep a separator-sized tail so a separator split across reads is still found
        keep = max(pos, len(data) - len(sep))
        pending.append(data[pos:keep])
        tail = data[keep:]
    pending.append(tail)
    last = b"".join(pending)
    if last:
        yield last


def scan_history(scanner: Scanner, path: Path) -> ScanReport:
    """Every key added by any commit reachable from any ref, each reported once (oldest)."""
    repo = require_repo(path)
    start = time.perf_counter()
    report = ScanReport(unit="commits")
    parser = _HistoryParser(scanner, report)
    cmd = ["git", "-C", str(repo), "-c", "core.quotepath=off", "log", "--all", "--reverse",
           "-p", "-U0", "--no-color", "--no-ext-diff", "--no-renames", "--no-textconv",
           "--full-index",
           "--format=tformat:%x01commit %H %aI"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for section in _sections(proc.stdout):
            parser.feed(section)
        stderr = proc.stderr.read() if proc.stderr else b""
    if proc.returncode not in (0, None) and b"does not have any commits" not in stderr:
        raise ScanError(f"git log failed: {os.fsdecode(stderr).strip()[:200]}")
    if report.files_scanned:
        parser.scan_binary(repo)
        parser.scan_messages(repo)
    report.seconds = time.perf_counter() - start
    report.sort()
    return report
