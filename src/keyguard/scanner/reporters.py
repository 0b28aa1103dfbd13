"""Human text and JSON reports. Neither ever contains a key: only redacted forms and
fingerprints (``Finding`` has no other way to give out the value than ``secret.reveal()``,
which no reporter calls)."""

from __future__ import annotations

import json
from itertools import groupby
from typing import IO, Any

from keyguard.domain.display import printable
from keyguard.scanner.model import Finding, ScanReport

JSON_VERSION = 1

PURGE_HINT = (
    "History keeps every key ever committed. Rotate the key first (that is what protects you);"
    " purging is optional: `git filter-repo --replace-text <file>` (or BFG), then force-push"
    " every branch and tag and ask every clone to re-clone."
)


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """The JSON shape of one finding (also used by the SARIF reporter's properties)."""
    out: dict[str, Any] = {
        "path": f.path,
        "line": f.line,
        "column": f.column,
        "detector": f.detector,
        "format": f.format,
        "confidence": f.confidence,
        "redacted": f.redacted,
        "fingerprint": f.fingerprint,
        "source": f.source,
        "encoding": f.encoding,
        "remedy": f.remedy,
    }
    optional = {
        "commit": f.commit,
        "author_date": f.author_date,
        "cell": f.cell,
        "cell_part": f.part,
        "verification": f.verification,
        "managed": f.managed,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if f.notes:
        out["notes"] = list(f.notes)
    return out


def render_json(report: ScanReport, out: IO[str]) -> None:
    """Write the report as one JSON document."""
    doc: dict[str, Any] = {
        "version": JSON_VERSION,
        "tool": "keyguard",
        "findings": [finding_to_dict(f) for f in report.findings],
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        "summary": {
            "findings": len(report.findings),
            "files_scanned": report.files_scanned,
            "bytes_scanned": report.bytes_scanned,
            "unit": report.unit,
            "baselined": report.baselined,
            "seconds": round(report.seconds, 4),
        },
    }
    if any(f.source == "history" for f in report.findings):
        doc["guidance"] = [PURGE_HINT]
    json.dump(doc, out, indent=2)
    out.write("\n")


def _describe(f: Finding) -> str:
    where = f"{f.line}:{f.column}"
    if f.cell is not None:
        where += f" (cell {f.cell} {f.part})"
    parts = [where, f.format, f"[{f.confidence}]", f.redacted, f.fingerprint]
    if f.source == "history":
        parts.append(f"commit {(f.commit or '')[:12]} {f.author_date or ''}")
    if f.encoding != "utf-8":
        parts.append(f.encoding)
    if f.verification:
        parts.append(f"verify: {f.verification}")
    return "  ".join(parts)


def render_text(report: ScanReport, out: IO[str], *, color: bool = False) -> None:
    """Findings grouped by file, with what to do; rich colour when ``color`` (a TTY)."""
    lines: list[tuple[str, str]] = []  # (style, text)

    def add(style: str, text: str) -> None:
        # paths and notes come from the scanned tree: never let them drive the terminal (an
        # escape sequence in a file name could erase the finding printed above it)
        lines.append((style, printable(text)))

    for path, group in groupby(report.findings, key=lambda f: f.path):
        items = list(group)
        add("bold", path)
        for f in items:
            add("red" if f.confidence == "high" else "yellow", "  " + _describe(f))
            if f.managed:
                add("magenta", f"    managed by keyguard: {f.managed}")
            for note in f.notes:
                add("dim", f"    {note}")
            add("dim", f"    -> {f.remedy}")
    if any(f.source == "history" for f in report.findings):
        add("", "")
        add("cyan", PURGE_HINT)
    if report.skipped:
        reasons: dict[str, int] = {}
        for s in report.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        add("dim", f"skipped {len(report.skipped)} file(s): {summary} (--json lists them)")
    n = len(report.findings)
    extra = []
    if report.baselined:
        extra.append(f"{report.baselined} in baseline")
    tail = f" ({', '.join(extra)})" if extra else ""
    unit = report.unit
    status = f"{n} key(s) found" if n else "no keys found"
    add(
        "bold red" if n else "bold green",
        f"{status} in {report.files_scanned} {unit}, {report.bytes_scanned / 1e6:.1f} MB,"
        f" {report.seconds:.2f}s{tail}",
    )
    if color:
        from rich.console import Console
        from rich.markup import escape

        console = Console(file=out, highlight=False, soft_wrap=True)
        for style, text in lines:
            console.print(f"[{style}]{escape(text)}[/]" if style else escape(text))
    else:
        out.write("".join(text + "\n" for _, text in lines))
