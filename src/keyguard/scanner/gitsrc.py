"""Git sources: the staged index (pre-commit) and the whole history (every ref).

Both talk to ``git`` through two or three subprocesses whatever the size of the change:
``git diff --cached --raw`` + one ``git cat-file --batch`` for the index, and one streamed
``git log --all -p`` for history (plus, when it shows binary files, one ``cat-file`` for their
blobs: UTF-16 text is binary to git; see :mod:`keyguard.scanner.gitblobs`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from keyguard.errors import ScanError
from keyguard.scanner import concat
from keyguard.scanner.detectors import Detector
from keyguard.scanner.encoded import might_hold
from keyguard.scanner.engine import scan_text
from keyguard.scanner.gitblobs import BinaryVersion, blob_id, blob_sizes, git_cmd, read_blobs
from keyguard.scanner.gitblobs import git as _git
from keyguard.scanner.gitdiff import line_number, run_around, runs, sections, unquote_path
from keyguard.scanner.gitdiff import target as diff_target
from keyguard.scanner.model import Finding, RawMatch, ScanReport, Skipped
from keyguard.scanner.runner import Scanner, scan_data, too_large
from keyguard.scanner.walk import git_toplevel

_COMMIT = b"\x01commit "
_BINARY = b"\nBinary files "


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
            self._scan_section(section)
        if might_hold(section):  # a base64-encoded key, maybe wrapped over added lines
            self._scan_encoded(section)
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
        path = unquote_path(raw)[2:]
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

    def _scan_section(self, section: bytes) -> None:
        """Look only at the added lines that contain a keyword; locate them by counting.
        (Base64 is decoded by :meth:`_scan_encoded`, over whole runs of added lines.)"""
        where = diff_target(section)
        if where is None:
            return
        first_hunk, file_path = where
        done: set[int] = set()
        # every added line starts with '+': with scan_all, each one is a hit
        keywords = [b"+"] if self.scan_all else self.keywords
        for keyword in keywords:
            hit = section.find(keyword, first_hunk)
            while hit >= 0:
                start = section.rfind(b"\n", 0, hit) + 1
                if start not in done and section.startswith(b"+", start):
                    done.add(start)
                    end = section.find(b"\n", start)
                    line = section[start + 1 : end if end >= 0 else len(section)]
                    number = line_number(section, start)
                    self._found(line, file_path, number, encoded=False)
                hit = section.find(keyword, hit + len(keyword))

    def _scan_joined(self, section: bytes) -> None:
        """Keys split over string literals joined across lines: each run of consecutive added
        lines around a hit of the concatenation prefilter is scanned as one text."""
        where = diff_target(section)
        if where is None:
            return
        first_hunk, file_path = where
        done = first_hunk
        for hit in concat.hits(section, first_hunk):
            start = section.rfind(b"\n", 0, hit) + 1
            if hit < done or not section.startswith(b"+", start):
                continue
            begin, done = run_around(section, first_hunk, start)
            self._scan_run(section, begin, done, file_path, concat_detectors=self.detectors)

    def _scan_encoded(self, section: bytes) -> None:
        """Base64-encoded keys, also wrapped over several added lines: each run of consecutive
        added lines that passes the base64 prefilter is decoded as one text (a line of a
        wrapped run alone would decode to a cut key)."""
        where = diff_target(section)
        if where is None:
            return
        first_hunk, file_path = where
        for begin, end in runs(section, first_hunk):
            if might_hold(section[begin:end]):
                self._scan_run(section, begin, end, file_path, base64_detectors=self.detectors)

    def _scan_run(
        self,
        section: bytes,
        begin: int,
        end: int,
        file_path: str,
        *,
        base64_detectors: Sequence[Detector] = (),
        concat_detectors: Sequence[Detector] = (),
    ) -> None:
        """Scan the added lines ``section[begin:end]`` (their "+" removed) as one text."""
        lines = [line[1:] for line in section[begin:end].split(b"\n")]
        text = b"\n".join(lines).decode("utf-8", "surrogateescape")
        first = line_number(section, begin)
        for m in scan_text(
            text, (), base64_detectors=base64_detectors, concat_detectors=concat_detectors
        ):
            line_no = first + m.line - 1
            self._record(m._replace(line=line_no), file_path, self.ordinal, self.commit, self.date)

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

    def _found(self, raw: bytes, file_path: str, line_no: int, *, encoded: bool = True) -> None:
        """Keys in one line (``encoded``: base64-encoded ones too)."""
        text = raw.decode("utf-8", "surrogateescape")
        for m in scan_text(text, self.detectors, base64_detectors=None if encoded else ()):
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


def scan_history(scanner: Scanner, path: Path) -> ScanReport:
    """Every key added by any commit reachable from any ref, each reported once (oldest)."""
    repo = require_repo(path)
    start = time.perf_counter()
    report = ScanReport(unit="commits")
    parser = _HistoryParser(scanner, report)
    cmd = [*git_cmd(repo, "-c", "core.quotepath=off"), "log", "--all", "--reverse",
           "-p", "-U0", "--no-color", "--no-ext-diff", "--no-renames", "--no-textconv",
           "--full-index",
           "--format=tformat:%x01commit %H %aI"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for section in sections(proc.stdout):
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
