"""Keys stored base64-encoded: a Kubernetes Secret's ``data:``, a CI variable, a ``.env`` value.

``base64(key)`` hides every literal the detectors anchor on, but a key's fixed parts survive as
fixed base64 characters. A byte string that starts ``a`` bytes into a 3-byte group (``a`` = 0, 1
or 2, its *alignment*) always encodes to the same characters, apart from the one or two at each
end that share bits with the neighbouring bytes (:func:`stable_chars`):

* every OpenAI key holds the marker ``T3BlbkFJ``, which encodes to ``VDNCbGJrRk`` (alignment 0),
  ``QzQmxia0ZK`` (1) or ``UM0JsYmtGS`` (2): every OpenAI format at every alignment, as the
  whole value or anywhere inside a larger encoded blob;
* ``kg_`` / ``kga_`` encode to ``a2df`` / ``a2dhX`` at alignment 0: a keyguard key that is the
  whole value (or starts a multiple of 3 bytes into a blob). At alignments 1 and 2 they keep
  only 3-4 fixed characters (``tnX``, ``rZ1``…); those are searched inside blobs that pass the
  prefilter, but do not make a blob pass it.

The prefilter (:func:`might_hold`) must cost little next to the scan itself. The marker forms
contain letters that are rare in source code (``J`` in two of them, ``Z`` in the third):
``bytes.find`` of one character is a ``memchr``, and each occurrence is checked with
``startswith`` (after 64 occurrences in one blob, ``find`` of the anchors takes over).
``a2df``/``a2dh`` have no rare letter: one regex pass whose literal prefix is ``2d`` finds them.

Only blobs that pass are decoded, and then only a window around each anchor: the base64 run
around it (the characters of both alphabets, so URL-safe base64 works too) is decoded at each
of the four possible character phases, and the detectors and fake filters run on the decoded
text. A key is reported at the position of its first encoded character.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterator

from keyguard.domain.keys import OPENAI_MARKER
from keyguard.scanner.wrapped import any_split_anchor, split_anchor_near

#: decoded bytes kept on each side of an anchor (an OpenAI key is at most ~620 bytes long)
WINDOW = 640
#: occurrences of one pivot letter checked one by one before falling back to ``find``
_PIVOT_LIMIT = 64

_TO_STANDARD = str.maketrans("-_", "+/")


def stable_chars(prefix: bytes, align: int) -> bytes:
    """The base64 characters fixed by ``prefix`` when it starts ``align`` bytes into a group."""
    encoded = binascii.b2a_base64(b"\x00" * align + prefix + b"\x00\x00", newline=False)
    return encoded[(0, 2, 3)[align] : 8 * (align + len(prefix)) // 6]


_MARKER = OPENAI_MARKER.encode()
#: every anchor: the marker and ``kg_``/``kga_`` at alignments 0, 1 and 2, in that order
ANCHORS: tuple[bytes, ...] = tuple(
    stable_chars(p, a) for p in (_MARKER, b"kg_", b"kga_") for a in range(3)
)


#: rare letter -> (anchor, index of the letter in it): the marker at every alignment
_PIVOTS: tuple[tuple[bytes, tuple[tuple[bytes, int], ...]], ...] = (
    (b"J", ((ANCHORS[0], 6), (ANCHORS[2], 3))),  # VDNCbGJrRk, UM0JsYmtGS
    (b"Z", ((ANCHORS[1], 8), (ANCHORS[5], 1), (ANCHORS[8], 1))),  # QzQmxia0ZK, rZ1, rZ2Ff
)
#: the marker forms, looked for across line breaks in wrapped base64 (``kg_``/``kga_`` keep too
#: few fixed characters at alignments 1 and 2 to be told apart from chance once cut in two)
_WRAPPABLE: tuple[bytes, ...] = ANCHORS[:3]
#: before a cut marker's second part: indentation, the line break, or the "+" that starts an
#: added line in ``git log -p`` output (history scans run the prefilter on diffs)
_BEFORE_CUT, _AFTER_CUT = b" \t\n+", b"\r\n"
#: (byte before, byte after) a pivot letter that may be part of a marker form cut by a line
#: break: the form's own neighbours of the letter, or a break / indentation on one side
_CUT_NEIGHBOURS: frozenset[tuple[int, int]] = frozenset(
    (before, after)
    for _, anchors in _PIVOTS
    for anchor, i in anchors
    if anchor in _WRAPPABLE
    for before in (anchor[i - 1], *_BEFORE_CUT)
    for after in (anchor[i + 1], *_AFTER_CUT)
)
#: per pivot letter: the letter followed by a byte it has before a cut (its marker form's next
#: character, or a line break), for :func:`_cut_marker_after`
_CUT_PATTERNS: tuple[re.Pattern[bytes], ...] = tuple(
    re.compile(
        re.escape(letter)
        + b"["
        + b"".join(
            re.escape(bytes([c]))
            for c in sorted({a[i + 1] for a, i in anchors if a in _WRAPPABLE} | set(_AFTER_CUT))
        )
        + b"]"
    )
    for letter, anchors in _PIVOTS
)
#: ``kg_``/``kga_`` at alignment 0 (``a2df``, ``a2dhX``) have no rare letter: one regex pass
#: whose literal prefix "2d" keeps the regex engine in its fast scanning loop until a "2d"
_KEYGUARD_PASS = re.compile(rb"2d(?<=a2d)[fh]")


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(any anchor, a run of base64 characters): compiled only when a blob passes."""
    anchors = "|".join(re.escape(a.decode()) for a in sorted(ANCHORS, key=len, reverse=True))
    return re.compile(anchors), re.compile(r"[A-Za-z0-9+/_-]+")


#: the anchors as text, for :func:`keyguard.scanner.wrapped.wrapped_blocks`
ANCHOR_TEXTS: tuple[str, ...] = tuple(a.decode() for a in ANCHORS)


def _cut_marker_after(data: bytes, start: int) -> bool:
    """A marker form cut by a line break after ``start``, for data with many pivot letters.

    One regex per letter, the letter followed by a byte it may have before a cut: the letter
    is its literal first byte, which the regex engine skips to fast; each (rare) hit is
    checked as in the loop of :func:`might_hold`. Past 256 hits the whole data is joined.
    """
    left = 256
    for pattern in _CUT_PATTERNS:
        for m in pattern.finditer(data, max(start - 1, 0)):
            pos = m.start()
            fits = pos and (data[pos - 1], data[pos + 1]) in _CUT_NEIGHBOURS
            if fits and split_anchor_near(data, pos, _WRAPPABLE):
                return True
            left -= 1
            if not left:
                return any_split_anchor(data, _WRAPPABLE)
    return False


def might_hold(data: bytes) -> bool:
    """Cheap test on raw bytes: could ``data`` hold a base64-encoded OpenAI or keyguard key?"""
    if _KEYGUARD_PASS.search(data) is not None:
        return True
    find, startswith = data.find, data.startswith
    for letter, anchors in _PIVOTS:
        pos, left = find(letter), _PIVOT_LIMIT
        while pos >= 0:
            for anchor, index in anchors:
                if pos >= index and startswith(anchor, pos - index):
                    return True
            # base64 wrapped over lines: the anchor may be cut by a line break near the letter;
            # its neighbours are then the anchor's own or a line break / indentation
            around = data[pos - 1 : pos + 2] if pos else b""
            if (
                len(around) == 3
                and (around[0], around[2]) in _CUT_NEIGHBOURS
                and split_anchor_near(data, pos, _WRAPPABLE)
            ):
                return True
            left -= 1
            if not left:  # a letter this common here: let find() do the rest
                # (an anchor starting before ``pos`` would hold this letter before its own)
                if any(find(a, pos) >= 0 for a, _ in anchors):
                    return True
                if _cut_marker_after(data, pos):
                    return True
                break
            pos = find(letter, pos + 1)
    return False


def decoded_windows(text: str) -> Iterator[tuple[int, str, str]]:
    """Yield ``(offset, decoded, alphabet)`` for the base64 around each anchor in ``text``.

    ``decoded`` is the decoded bytes as Latin-1 text (one character per byte); a key found at
    index ``i`` of it starts at character ``offset + 4 * i // 3`` of ``text``. ``alphabet`` is
    ``base64`` or ``base64url`` (the run holds ``-`` or ``_``). Windows of anchors in the same
    run that overlap are merged and decoded once, so a run dense with anchors (crafted, or just
    long) costs time linear in its length, not in anchors times window.
    """
    span = WINDOW * 4 // 3  # characters that encode WINDOW bytes
    run: tuple[int, int] | None = None  # the (possibly clipped) run of the window being built
    lo = hi = -1
    for hit in _patterns()[0].finditer(text):
        if run is not None and run[0] <= hit.start() - span and hit.end() + span <= run[1]:
            found = run  # the window lies inside the run already found: no new search
        else:
            found = _run_around(text, hit.start(), hit.end())
        # decode up to WINDOW bytes either side of the anchor: enough for any key around it
        a = max(found[0], hit.start() - span)
        b = min(found[1], hit.end() + span)
        if run is not None and found[0] < run[1] and a <= hi:
            # the same run (found runs overlap only if they are one) and overlapping windows:
            # extend the window being built instead of decoding this one on its own
            hi = max(hi, b)
            run = (min(run[0], found[0]), max(run[1], found[1]))
            continue
        if run is not None:
            yield from _decode(text, lo, hi)
        run, lo, hi = found, a, b
    if run is not None:
        yield from _decode(text, lo, hi)


def _decode(text: str, lo: int, hi: int) -> Iterator[tuple[int, str, str]]:
    """``text[lo:hi]`` decoded at each of the four character phases (the run may start
    mid-group: a cut window, a glued prefix)."""
    chunk = text[lo:hi]
    alphabet = "base64url" if ("-" in chunk or "_" in chunk) else "base64"
    chunk = chunk.translate(_TO_STANDARD)
    for phase in range(4):
        part = chunk[phase:]
        rest = len(part) % 4  # the last group: 2 or 3 characters are 1 or 2 bytes
        part = part[:-1] if rest == 1 else part + "=" * (-len(part) % 4)
        if not part:
            continue
        try:
            raw = binascii.a2b_base64(part)
        except (binascii.Error, ValueError):
            continue
        yield lo + phase, raw.decode("latin-1"), alphabet


def _run_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The run of base64 characters (either alphabet) that contains ``text[start:end]``."""
    line_start = text.rfind("\n", 0, start) + 1
    lo = max(line_start, start - 2 * WINDOW)
    best = (start, end)
    for run in _patterns()[1].finditer(text, lo, min(len(text), end + 2 * WINDOW)):
        if run.start() <= start and run.end() >= end:
            best = (run.start(), run.end())
            break
        if run.start() > start:
            break
    return best
