"""Base64 wrapped over several lines: MIME (76 columns), PEM (64), YAML block scalars (``|``).

``base64`` without ``-w0`` wraps its output at 76 characters, PEM bodies at 64, and a YAML block
scalar holds the wrapped text indented under its key. Each line break (and the indentation after
it) can fall anywhere, even inside the fixed characters :mod:`keyguard.scanner.encoded` anchors
on, so both the prefilter and the decoder have to look across line breaks:

* :func:`split_anchor_near` is called by the base64 prefilter at each rare pivot letter
  (``J``/``Z``) that is not part of a whole anchor: if a line break is within an anchor's length
  of it, the bytes around it are joined (blanks and line breaks removed) and searched for the
  anchors. The prefilter calls it only for pivots whose neighbours fit a cut marker form.
* :func:`wrapped_blocks` finds runs of two or more lines made only of base64 characters (after
  any indentation; lines of one width of at least 16 characters and a last line no longer,
  ``=`` padding only at the end, no line starting ``--``), joins each run into one string and
  gives a function that maps a position in the joined string back to the text, so a key is
  reported where its encoded form starts. Only texts that passed the prefilter get here.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator

#: an anchor's characters on the other side of the break at most; bytes either side of a pivot
#: letter joined for the split-anchor check (an anchor plus a deeply nested YAML indentation)
_NEAR = 9
_SPAN = 80
_BREAK_AFTER = re.compile(rb"[A-Za-z0-9+/_-]{0,9}\r?\n[ \t]*[A-Za-z0-9+/_-]")
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]+")

#: a line may not start with "--" (a MIME boundary, a PEM armour line, a markdown rule). The
#: pattern starts with a line break, a literal the regex engine skips to fast (``^`` with
#: ``re.M`` is tried at every position); the text is searched with a line break put in front.
#: ``(?=(run))\2`` takes a run whole (a look-ahead is never backtracked into): a line that is a
#: long run followed by something else (``path/to/file.py,sha256=…``) fails at once
_B64 = "[A-Za-z0-9+/_-]"
_BLOCK = re.compile(
    rf"\n((?:[ \t]*(?!--)(?=({_B64}{{16,}}))\2[ \t]*\r?\n)+"
    rf"[ \t]*(?!--)(?=({_B64}+))\3={{0,2}})[ \t]*\r?(?=\n|\Z)"
)
_LINE = re.compile(r"[A-Za-z0-9+/_=-]+")


def split_anchor_near(data: bytes, pos: int, anchors: tuple[bytes, ...]) -> bool:
    """Does an anchor, broken by a line break near ``pos``, surround the byte at ``pos``?

    Cheap checks first: the pivot must be at most 9 base64 characters before the end of a line
    followed by an indented base64 character, or at most 9 after the indentation of a line that
    follows one ending in a base64 character. Only then are the bytes around it joined.
    """
    if data.find(b"\n", pos, pos + _NEAR + 2) >= 0:  # a break after the pivot, close by
        if _BREAK_AFTER.match(data, pos + 1) is None:
            return False
    else:  # a break before it: only indentation and a few base64 characters in between
        start = data.rfind(b"\n", max(0, pos - _SPAN), pos)
        if start < 1:
            return False
        head = data[start + 1 : pos]
        head = (head[1:] if head.startswith(b"+") else head).lstrip(b" \t")  # "+": a diff
        if len(head) > _NEAR:
            return False
        before = data[start - 2 : start].rstrip(b"\r")[-1:]
        if not before or not _B64_RUN.fullmatch(head + before):
            return False
    window = data[max(0, pos - _SPAN) : pos + _SPAN].replace(b"\n+", b"\n")  # diffs' "+"
    joined = window.translate(None, b" \t\r\n")
    return any(a in joined for a in anchors)


def any_split_anchor(data: bytes, anchors: tuple[bytes, ...]) -> bool:
    """Is any anchor in ``data`` once blanks and line breaks are removed (a full pass)?"""
    if b"\n" not in data:
        return False
    joined = data.replace(b"\n+", b"\n").translate(None, b" \t\r\n")
    return any(a in joined for a in anchors)


def wrapped_blocks(
    text: str, anchors: tuple[str, ...]
) -> Iterator[tuple[str, Callable[[int], int], tuple[int, int]]]:
    """Yield ``(joined, position, span)`` for each run of wrapped base64 lines in ``text``.

    A run is lines of one width (the wrap column) and a last line no longer; a line of another
    width ends it, so a short line after the blob ("EOF") is not glued on. ``position(i)`` is
    the offset in ``text`` of character ``i`` of ``joined``; ``span`` is the run's
    ``(start, end)`` in ``text``. Only runs that hold one of ``anchors`` once their blanks and
    line breaks are removed are yielded (a PEM bundle of certificates has hundreds of runs).
    """
    for block in _BLOCK.finditer("\n" + text):
        joined = "".join(block.group(1).split())
        if not any(a in joined for a in anchors):
            continue
        lines = list(_LINE.finditer(text, block.start(1) - 1, block.end(1) - 1))
        first = 0
        while first < len(lines) - 1:
            width = len(lines[first].group(0))
            last = first + 1
            while last < len(lines) - 1 and len(lines[last].group(0)) == width:
                last += 1
            if len(lines[last].group(0)) > width:
                last -= 1  # a longer line starts another run
            if last > first:
                yield _joined(lines[first : last + 1])
            first = last + 1


def _joined(
    lines: list[re.Match[str]],
) -> tuple[str, Callable[[int], int], tuple[int, int]]:
    starts: list[int] = []  # offset in joined of each line's first character
    size = 0
    for line in lines:
        starts.append(size)
        size += len(line.group(0))
    origins = [line.start() for line in lines]

    def position(i: int) -> int:
        k = bisect.bisect_right(starts, i) - 1
        return origins[k] + i - starts[k]

    return "".join(m.group(0) for m in lines), position, (lines[0].start(), lines[-1].end())
