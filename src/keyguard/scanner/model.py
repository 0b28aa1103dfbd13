"""What a scan produces: findings (never holding a printable key), skip notes, a report.

A :class:`Finding` keeps the key inside a :class:`~keyguard.domain.secret.Secret`, so every way
of printing it shows only the redacted form and fingerprint. Reporters read ``redacted`` and
``fingerprint``; only ``--verify``, the vault lookup and the fixer call ``secret.reveal()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from keyguard.domain.secret import Secret

Confidence = Literal["high", "medium", "low"]
SourceKind = Literal["file", "staged", "history", "stdin"]
NotebookPart = Literal["source", "output"]

CONFIDENCE_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class RawMatch(NamedTuple):
    """One key found in one blob of text, before it becomes a :class:`Finding`.

    This is the only place the value travels as a plain ``str``: between a worker process and
    the parent (``Secret`` refuses to be pickled, on purpose). It is never printed.
    """

    detector: str
    format: str
    confidence: str
    value: str
    line: int
    column: int
    encoding: str  # "utf-8", "utf-16", "percent-encoded", ...
    cell: int | None = None  # notebook cell number (1-based, as Jupyter shows it)
    part: str | None = None  # "source" | "output" for notebooks

    def __repr__(self) -> str:  # never show the value, even in a failing assertion
        return (
            f"RawMatch({self.format!r}, {self.confidence!r}, line={self.line}, "
            f"column={self.column}, encoding={self.encoding!r}, cell={self.cell!r})"
        )


@dataclass(frozen=True)
class Finding:
    """A key found at one place. ``secret`` prints redacted; nothing else holds the value."""

    detector: str
    format: str
    confidence: str
    secret: Secret
    path: str
    line: int
    column: int
    source: SourceKind = "file"
    encoding: str = "utf-8"
    commit: str | None = None
    author_date: str | None = None
    cell: int | None = None
    part: str | None = None
    verification: str | None = None
    managed: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """``sha256:`` + 16 hex digits of the key: stable, not reversible."""
        return self.secret.fingerprint

    @property
    def redacted(self) -> str:
        """The key's format prefix and last four characters."""
        return self.secret.redacted

    @property
    def remedy(self) -> str:
        """One sentence saying what the user has to do about this finding."""
        if self.source == "history":
            return (
                "the key is in git history: rotate it (editing files cannot remove it); "
                "purge history only if you must (see docs/scanner.md)"
            )
        if self.source == "staged":
            return (
                "the key is staged for commit: move it out (keyguard fix), re-stage the file, "
                "and rotate it if it was ever pushed or shared"
            )
        if self.part == "output":
            return (
                "the key is in a cell output: clear the output (keyguard fix redacts the key "
                "there) and rotate the key"
            )
        return "move the key out of the code (keyguard fix) and rotate it"

    @classmethod
    def from_raw(
        cls,
        raw: RawMatch,
        path: str,
        source: SourceKind = "file",
        *,
        commit: str | None = None,
        author_date: str | None = None,
    ) -> Finding:
        """Wrap a worker's :class:`RawMatch` into a finding whose key is a ``Secret``."""
        return cls(
            detector=raw.detector,
            format=raw.format,
            confidence=raw.confidence,
            secret=Secret(raw.value, register=False),
            path=path,
            line=raw.line,
            column=raw.column,
            source=source,
            encoding=raw.encoding,
            commit=commit,
            author_date=author_date,
            cell=raw.cell,
            part=raw.part,
        )


@dataclass(frozen=True)
class Skipped:
    """A file the scan did not read, and why (binary, too large, unreadable)."""

    path: str
    reason: str


@dataclass
class ScanReport:
    """Everything one scan found, plus what it skipped and how much it read."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files_scanned: int = 0
    bytes_scanned: int = 0
    baselined: int = 0
    unit: str = "files"  # what files_scanned counts: files, or commits for history
    seconds: float = 0.0

    def sort(self) -> None:
        """Order findings by path, line, column (stable output for diffs and tests)."""
        self.findings.sort(key=lambda f: (f.path, f.line, f.column, f.commit or ""))
        self.skipped.sort(key=lambda s: s.path)
