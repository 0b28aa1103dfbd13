"""Find keys in one blob of bytes: classify, prefilter, decode, match, locate.

The hot path is :func:`scan_bytes`. For the vast majority of files it costs a BOM check, a
NUL search over the first 8 KiB and one pass of a bytes regex over the detectors' anchors
(:func:`~keyguard.scanner.detectors.first_pass`); only blobs that contain a keyword are
decoded and matched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from keyguard.scanner.detectors import Detector, first_pass
from keyguard.scanner.model import RawMatch

ALLOW_MARKER = "keyguard: allow"
SNIFF = 8192

_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
#: runs of URL characters with a percent-encoded '-' or '_' inside (``sk%2Dproj%2D…``)
_PERCENT_RUN = re.compile(r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2}){20,}")
_PERCENT_SEPARATOR = re.compile(r"%(?:2[Dd]|5[Ff])")


class Binary(Exception):
    """Raised by :func:`sniff_encoding` for content that is not text."""


def sniff_encoding(data: bytes) -> str:
    """``utf-8``, ``utf-16-le``/``utf-16-be`` (BOM or NUL pattern), or raise :class:`Binary`."""
    encoding = _BOMS.get(data[:2])
    if encoding is not None:
        return encoding
    if data.find(b"\x00", 0, SNIFF) < 0:
        return "utf-8"
    head = data[:SNIFF]
    even, odd = head[0::2], head[1::2]
    # ASCII text in UTF-16 without a BOM: nearly every other byte is NUL
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    raise Binary("binary file")


def scan_bytes(
    data: bytes, detectors: Sequence[Detector], *, notebook: bool = False
) -> list[RawMatch]:
    """Every key in ``data``. Raises :class:`Binary` for content that is not text."""
    encoding = sniff_encoding(data)
    if encoding == "utf-8":
        active = select(detectors, data)
        if not active:
            return []
        text = data.decode("utf-8", "surrogateescape")
    else:
        text = data.decode(encoding, "replace").lstrip("\ufeff")
        active = select(detectors, text.encode("utf-8", "surrogatepass"))
        if not active:
            return []
    matches = scan_text(text, active, encoding="utf-16" if encoding != "utf-8" else "utf-8")
    if notebook and matches:
        from keyguard.scanner.notebook import annotate_notebook  # json only when needed

        matches = annotate_notebook(text, matches)
    return matches


def select(detectors: Sequence[Detector], data: bytes) -> list[Detector]:
    """The detectors worth running on ``data``, found with as few passes as possible.

    One first-pass regex over every detector's anchors; each hit settles the detectors that
    own that anchor, and the search goes on (from the hit) only for the others. A file with
    no anchor costs one pass; a file full of ``pkg_`` costs two, not one per keyword.
    """
    # a detector without anchors or keywords cannot be prefiltered: it always runs
    chosen = [d for d in detectors if not (d.anchors or d.keywords)]
    remaining, pos = [d for d in detectors if d not in chosen], 0
    while remaining:
        m = first_pass(remaining).search(data, pos)
        if m is None:
            break
        hit = m.group(0)
        owners = [d for d in remaining if hit in (d.anchors or d.keywords)]
        if not owners:  # cannot happen with non-empty anchors; never loop forever
            break
        chosen += owners
        remaining = [d for d in remaining if d not in owners]
        pos = m.start()
    return [d for d in chosen if d.wanted(data)]


def scan_text(
    text: str, detectors: Sequence[Detector], *, encoding: str = "utf-8"
) -> list[RawMatch]:
    """Every key in ``text`` that no ``keyguard: allow`` marker on its line exempts."""
    found: dict[tuple[int, str], RawMatch] = {}
    lines = _LineIndex(text)
    for detector in detectors:
        for offset, value in detector.candidates(text):
            _add(found, detector, value, offset, lines, encoding)
    if "%" in text and _PERCENT_SEPARATOR.search(text):
        from urllib.parse import unquote

        for run in _PERCENT_RUN.finditer(text):
            chunk = run.group(0)
            if "%" not in chunk:
                continue
            decoded = unquote(chunk, errors="surrogateescape")
            for detector in detectors:
                for _, value in detector.candidates(decoded):
                    _add(found, detector, value, run.start(), lines, "percent-encoded")
    return sorted(found.values(), key=lambda m: (m.line, m.column))


def _add(
    found: dict[tuple[int, str], RawMatch],
    detector: Detector,
    value: str,
    offset: int,
    lines: _LineIndex,
    encoding: str,
) -> None:
    verdict = detector.classify(value)
    if verdict is None:
        return
    line, column, line_text = lines.locate(offset)
    if ALLOW_MARKER in line_text or (line, value) in found:
        return
    fmt, confidence = verdict
    found[(line, value)] = RawMatch(detector.name, fmt, confidence, value, line, column, encoding)


class _LineIndex:
    """Offset -> (line, column, line text), computed lazily and only for matches."""

    def __init__(self, text: str) -> None:
        self.text = text

    def locate(self, offset: int) -> tuple[int, int, str]:
        text = self.text
        start = text.rfind("\n", 0, offset) + 1
        end = text.find("\n", offset)
        line_text = text[start : end if end >= 0 else len(text)]
        return text.count("\n", 0, offset) + 1, offset - start + 1, line_text
