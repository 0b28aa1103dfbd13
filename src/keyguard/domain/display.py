"""Untrusted text made safe to print on a terminal.

Audit fields (request paths, model names), file names and lines from a scanned repository
reach the terminal of whoever reads keyguard's output. Control characters there could move the
cursor, erase lines (hiding a finding) or retitle the window, and bidirectional overrides could
make text read differently from what it is (CVE-2021-42574, "Trojan Source"). :func:`printable`
shows each such character as a visible escape instead.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional marks, embeddings, overrides and isolates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control or bidi-control character shown as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text
