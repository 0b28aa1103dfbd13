"""Find keys in one blob of bytes: classify, prefilter, decode, match, locate.

The hot path is :func:`scan_bytes`. For the vast majority of files it costs a BOM check, a
NUL search over the first 8 KiB and one pass of a bytes regex over the detectors' anchors
(:func:`~keyguard.scanner.detectors.first_pass`) plus the base64 prefilter
(:func:`~keyguard.scanner.encoded.might_hold`); only blobs that contain a keyword or an anchor
of a base64-encoded key are decoded and matched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from keyguard.scanner import concat
from keyguard.scanner.detectors import Detector, first_pass, left_boundary_ok
from keyguard.scanner.encoded import ANCHOR_TEXTS, decoded_windows, might_hold
from keyguard.scanner.model import RawMatch
from keyguard.scanner.wrapped import wrapped_blocks

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
        active, joined = select_joined(detectors, data)
        b64 = might_hold(data)
        if not active and not b64 and not joined:
            return []
        text = data.decode("utf-8", "surrogateescape")
    else:
        text = data.decode(encoding, "replace").lstrip("\ufeff")
        raw = text.encode("utf-8", "surrogatepass")
        active, joined = select_joined(detectors, raw)
        b64 = might_hold(raw)
        if not active and not b64 and not joined:
            return []
    matches = scan_text(
        text,
        active,
        encoding="utf-16" if encoding != "utf-8" else "utf-8",
        base64_detectors=detectors if b64 else (),
        concat_detectors=detectors if joined else (),
    )
    if notebook and matches:
        from keyguard.scanner.notebook import annotate_notebook  # json only when needed

        matches = annotate_notebook(text, matches)
    return matches


#: near-misses of a detector's ``quick`` regex ("pkg_…" for ``kg_``) checked one at a time
#: before :func:`select` lets the regex search the rest of the blob
NEAR_MISSES = 32


def select(detectors: Sequence[Detector], data: bytes) -> list[Detector]:
    """The detectors worth running on ``data`` (see :func:`select_joined`)."""
    return _select(detectors, data, joined=False)[0]


def select_joined(detectors: Sequence[Detector], data: bytes) -> tuple[list[Detector], bool]:
    """The detectors worth running on ``data``, and whether it may hold a key split over
    joined string literals (:func:`keyguard.scanner.concat.might_hold`, in the same pass)."""
    return _select(detectors, data, joined=True)


def _select(
    detectors: Sequence[Detector], data: bytes, *, joined: bool
) -> tuple[list[Detector], bool]:
    """The detectors worth running on ``data``, found with as few passes as possible.

    One first-pass regex over every detector's anchors; a hit settles the detectors that own
    that anchor, and the search goes on (from the hit) only for the others. An owner with a
    ``quick`` regex is settled only if the quick regex matches right there; a near miss
    (``pkg_resources`` for ``kg_``) just lets the search go on, so a file with a few of them
    costs one pass, not three. A file with no anchor costs one pass. With ``joined`` the
    pass also looks for the concatenation prefilter, until it matches once.
    """
    # a detector without anchors or keywords cannot be prefiltered: it always runs
    chosen = [d for d in detectors if not (d.anchors or d.keywords)]
    confirmed: list[Detector] = []  # quick regex matched: wanted() is settled
    remaining, pos, misses = [d for d in detectors if d not in chosen], 0, 0
    found_join = False
    while remaining or joined:
        m = first_pass(remaining, joined).search(data, pos)
        if m is None:
            break
        hit, start = m.group(0), m.start()
        if joined and hit not in _anchors(tuple(detectors)):  # a join: search on for anchors
            found_join, joined, pos = True, False, start
            continue
        owners = [d for d in remaining if hit in (d.anchors or d.keywords)]
        if not owners:  # cannot happen with non-empty anchors; never loop forever
            break
        settled = []
        for d in owners:
            if d.quick is None:
                chosen.append(d)
            elif d.quick.match(data, start) is not None:
                confirmed.append(d)
            elif misses >= NEAR_MISSES:  # many near misses: one regex pass settles it
                if d.quick.search(data, start) is not None:
                    confirmed.append(d)
            else:
                misses += 1
                continue
            settled.append(d)
        remaining = [d for d in remaining if d not in settled]
        pos = start if settled else start + 1
    return confirmed + [d for d in chosen if d.wanted(data)], found_join


@functools.lru_cache(maxsize=64)
def _anchors(detectors: tuple[Detector, ...]) -> frozenset[bytes]:
    return frozenset(a for d in detectors for a in (d.anchors or d.keywords))


def scan_text(
    text: str,
    detectors: Sequence[Detector],
    *,
    encoding: str = "utf-8",
    base64_detectors: Sequence[Detector] | None = None,
    concat_detectors: Sequence[Detector] | None = None,
) -> list[RawMatch]:
    """Every key in ``text`` that no ``keyguard: allow`` marker on its line exempts.

    Base64-encoded keys are looked for with ``base64_detectors`` (all of them: the decoded
    text may hold a key of any kind); ``None`` runs the cheap prefilter on ``text`` first and
    then uses ``detectors``, ``()`` skips them (the caller's prefilter found no anchor).
    ``concat_detectors`` does the same for keys split over joined string literals.
    """
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
    if base64_detectors is None:
        base64_detectors = detectors if might_hold(text.encode("utf-8", "surrogatepass")) else ()
    if base64_detectors:
        _scan_base64(text, base64_detectors, found, lines)
    if concat_detectors is None:
        raw = text.encode("utf-8", "surrogatepass")
        concat_detectors = detectors if concat.might_hold(raw) else ()
    if concat_detectors:
        _scan_concat(text, concat_detectors, found, lines)
    return sorted(found.values(), key=lambda m: (m.line, m.column))


def _scan_base64(
    text: str,
    detectors: Sequence[Detector],
    found: dict[tuple[int, str], RawMatch],
    lines: _LineIndex,
) -> None:
    """Keys inside base64 runs, reported where their encoded form starts; runs wrapped over
    several lines (MIME, PEM, YAML block scalars) are joined first."""
    windows, spans = [], []
    for joined, position, span in wrapped_blocks(text, ANCHOR_TEXTS):
        spans.append(span)
        windows += [(w, position) for w in decoded_windows(joined)]
    # a line of a wrapped block alone would decode to a cut key, itself key-shaped
    windows += [
        (w, _same) for w in decoded_windows(text) if not any(a <= w[0] < b for a, b in spans)
    ]
    for (offset, decoded, alphabet), position in windows:
        data = decoded.encode("latin-1")  # the detectors' own prefilters, on the decoded bytes
        for detector in detectors:
            if (detector.anchors or detector.keywords) and not detector.wanted(data):
                continue
            for index, value in detector.candidates(decoded):
                at = position(offset + 4 * index // 3)
                _add(found, detector, value, at, lines, alphabet)


def _same(offset: int) -> int:
    return offset


def _scan_concat(
    text: str,
    detectors: Sequence[Detector],
    found: dict[tuple[int, str], RawMatch],
    lines: _LineIndex,
) -> None:
    """Keys split over joined string literals, reported where the first literal's part starts.

    When the first literal already holds a key (``"sk-…" + "_suffix"``), the plain finding
    stands unless the joined key is of a known length and the plain one is not (a key cut one
    character before its end is still key-shaped, with ``medium`` confidence).
    """
    for offset, lead, joined in concat.joined_candidates(text):
        if not left_boundary_ok(text, offset):
            continue
        for detector in detectors:
            plain = [v for i, v in detector.candidates(lead) if i == 0]
            plain_verdict = detector.classify(plain[0]) if plain else None
            for index, value in detector.candidates(joined):
                verdict = detector.classify(value)
                if index or len(value) <= len(lead) or verdict is None:
                    continue
                if plain_verdict is not None:
                    if plain_verdict[1] == "high" or verdict[1] != "high":
                        continue
                    found.pop((lines.locate(offset)[0], plain[0]), None)
                _add(found, detector, value, offset, lines, "concatenated")


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
