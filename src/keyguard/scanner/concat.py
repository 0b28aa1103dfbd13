"""Keys split over several string literals joined in source code.

``"sk-proj-abc…" + "…def"`` (Python, JavaScript/TypeScript, Java, C#, Go, Kotlin, Swift, Ruby),
``'sk-…' . '…'`` (PHP, Perl), ``'sk-…' .. '…'`` (Lua), ``"sk-…" & "…"`` (VB),
``'sk-…' || '…'`` (SQL) and adjacent literals, which Python, C/C++, Ruby and the shell join
(``("sk-proj-abc"`` newline ``"def")``), possibly across line breaks, ``\\`` line continuations
and ``#``/``//`` end-of-line comments, hide a key from every pattern: no literal holds it whole.

The prefilter (:func:`might_hold`) is one regex pass that stops only at a ``k`` (literal first
byte, which the regex engine skips to fast): a key prefix (``sk-``, ``kg_``, ``kga_``) must be
followed by key characters up to a closing quote, then a join operator or an adjacent literal
(about 25 ms per 60 MB of source code). Ordinary code almost never
passes (``task-``, ``pkg_resources`` fail at once). Only then is the chain of literals read
(:func:`joined_candidates`): the first literal's key part, then each following literal made only
of key characters, until a literal holds anything else or no operator follows. The detectors
and fake filters then judge the joined text as they would a plain key.

Not handled: a key split inside its prefix (``"s" + "k-…"``), pieces joined through variables,
``+=``, ``join()``/``concat()``/``format()`` calls or template interpolation, literals with escape
sequences inside the key, and triple-quoted strings.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

#: at most this many literals in one chain, and this many characters in the joined key
MAX_PARTS = 64
MAX_LENGTH = 700

_KEY_CHARS = r"[A-Za-z0-9_-]"
_QUOTES = "\"'`"
#: what may separate two joined literals: blanks, line breaks, ``\`` continuations, comments,
#: then an optional operator (``+``, ``.``, ``..``, ``&``, ``||``) and the same again
_GAP = r"(?:\s|\\\r?\n|(?:#|//)[^\n]*\n)*"
_JOIN = _GAP + r"(?:(?:\+|\.\.?|&|\|\|)" + _GAP + r")?[rRuUbBfF@$]{0,2}"
#: the prefilter also runs on ``git log -p`` output, where each added line starts with "+"
_DIFF_GAP = r"(?:\s|\\\r?\n|(?:#|//)[^\n]*\n|(?<=\n)\+)*"
_DIFF_JOIN = _DIFF_GAP + r"(?:(?:\+|\.\.?|&|\|\|)" + _DIFF_GAP + r")?[rRuUbBfF@$]{0,2}"

#: key characters in a chain's first literal, possessive where Python has it (a run of key
#: characters holds no quote to backtrack to), at most MAX_LENGTH (a longer one is joined to
#: nothing). Unbounded, a run of "sk-sk-sk-…" not closed by a quote is read to its end from
#: each "sk-" in it: quadratic (100 KB took 25 s)
_LEAD_CHARS = f"{_KEY_CHARS}{{0,{MAX_LENGTH}}}" + ("+" if sys.version_info >= (3, 11) else "")
#: what follows a key prefix in the prefilter: key characters up to a quote, a join, a quote
PREFILTER_TAIL = (_LEAD_CHARS + "[" + _QUOTES + "]" + _DIFF_JOIN + "[" + _QUOTES + "]").encode()
#: the key prefixes after their ``k``, as regex source: ``sk-`` (the ``-`` checked before the
#: look-behind: ``sk`` is common in words), ``kg_``, ``kga_``.
#: :func:`keyguard.scanner.detectors.first_pass` merges them with the other ``k…`` anchors
PREFIXES_AFTER_K: dict[bytes, bytes] = {b"sk-": rb"-(?<=sk-)", b"kg_": b"g_", b"kga_": b"ga_"}
#: starting with the literal ``k``, the regex engine skips to each ``k`` fast (an alternation of
#: the prefixes would visit every position: 15x slower)
PREFILTER = re.compile(b"k(?:" + b"|".join(PREFIXES_AFTER_K.values()) + b")" + PREFILTER_TAIL)
_LEAD = re.compile(r"k(?:(?<=sk)-|ga?_)" + _LEAD_CHARS + r"(?=[" + _QUOTES + "])")
_NEXT = re.compile(_JOIN + r"(?P<q>[" + _QUOTES + r"])(?P<body>" + _KEY_CHARS + "*)")


def might_hold(data: bytes) -> bool:
    """Cheap test on raw bytes: is a key prefix at the end of a literal joined to another?"""
    return PREFILTER.search(data) is not None


def hits(data: bytes, pos: int = 0) -> Iterator[int]:
    """Where :func:`might_hold` would pass in ``data`` (from ``pos``): the offset of each hit."""
    for m in PREFILTER.finditer(data, pos):
        yield m.start()


def joined_candidates(text: str) -> Iterator[tuple[int, str, str]]:
    """Yield ``(offset, lead, joined)`` for each chain of literals that starts with a prefix.

    ``offset`` is where the prefix stands in ``text``, ``lead`` the first literal's part from
    the prefix on, ``joined`` that part followed by the key characters of the literals joined
    to it (only chains of two or more literals are yielded).
    """
    pos = 0
    while (lead := _LEAD.search(text, pos)) is not None:
        pos = lead.end()
        start = lead.start() - 1 if text.startswith("k-", lead.start()) else lead.start()
        parts = [text[start:pos]]
        end, total = lead.end() + 1, len(parts[0])  # after the first literal's closing quote
        while len(parts) < MAX_PARTS and total < MAX_LENGTH:
            m = _NEXT.match(text, end)
            if m is None:
                break
            body, close = m.group("body"), m.end()
            parts.append(body)
            total += len(body)
            if text.startswith(m.group("q"), close):  # the literal holds only key characters
                end = close + 1
            else:
                break  # the key ends inside this literal
        if len(parts) > 1 and any(parts[1:]):
            yield start, parts[0], "".join(parts)
