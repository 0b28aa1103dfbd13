"""Reading ``git log -p -U0`` output: file sections, their target path, runs of added lines."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import IO


def unquote_path(raw: bytes) -> str:
    """A path as git prints it (C-quoted when it holds special characters)."""
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith('"') and text.endswith('"'):
        escaped = codecs.decode(text[1:-1], "unicode_escape")
        return escaped.encode("latin-1", "surrogateescape").decode("utf-8", "replace")
    return text


def target(section: bytes) -> tuple[int, str] | None:
    """``(offset of the first hunk, path)`` of a diff that adds lines, else ``None``."""
    first_hunk = section.find(b"\n@@ ")
    plus = section.find(b"\n+++ ", 0, first_hunk)
    if first_hunk < 0 or plus < 0:
        return None  # binary, mode change only, ...
    # git appends a tab to names that contain a space ("+++ b/a b.txt\t")
    raw_path = section[plus + 5 : section.find(b"\n", plus + 1)].rstrip(b"\t")
    if raw_path == b"/dev/null":
        return None  # a deletion adds nothing
    return first_hunk, unquote_path(raw_path)[2:]


def line_number(section: bytes, start: int) -> int:
    """New-file line number of the added line at ``start`` (-U0: hunks hold only +/-)."""
    hunk = section.rfind(b"\n@@ ", 0, start)
    new = section[hunk + 1 : section.find(b"\n", hunk + 1)].split(b" ")[2]  # +start[,n]
    return int(new[1:].split(b",")[0]) + section.count(b"\n+", hunk + 1, start)


def runs(section: bytes, first_hunk: int) -> Iterator[tuple[int, int]]:
    """``(begin, end)`` of each run of consecutive added lines after ``first_hunk``."""
    pos = section.find(b"\n+", first_hunk)
    while pos >= 0:
        begin, end = run_around(section, first_hunk, pos + 1)
        yield begin, end
        pos = section.find(b"\n+", end)


def run_around(section: bytes, first_hunk: int, start: int) -> tuple[int, int]:
    """``(begin, end)`` of the run of consecutive added lines holding the line at ``start``."""
    begin = start
    while (prev := section.rfind(b"\n", 0, begin - 1) + 1) > first_hunk:
        if not section.startswith(b"+", prev):
            break
        begin = prev
    end = section.find(b"\n", start)
    while end >= 0 and section.startswith(b"+", end + 1):
        end = section.find(b"\n", end + 1)
    return begin, end if end >= 0 else len(section)


def sections(stream: IO[bytes], block: int = 1 << 20) -> Iterator[bytes]:
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
