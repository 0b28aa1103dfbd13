"""Generic filters that tell a random key body from a format-valid fake.

Real keys are random over a 62- or 64-character alphabet. Placeholders and fakes that happen
to have the right shape (``sk-proj-xxxx…T3BlbkFJxxxx…``, ``abcdefgh…``, ``1234…``, ``abab…``,
``your_key_here``) fail at least one of these cheap checks. Each check is tuned so that a truly
random body of 40+ characters fails it with probability below one in a million.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise

#: one character 6+ times in a row ("aaaaaa"), or a unit of 2-8 characters 4+ times
#: ("abababab", "abcabcabcabc"); random bodies of 150 characters hit this ~1 in 7 million
_REPEATED_UNIT = re.compile(r"(.)\1{5,}|(.{2,8}?)\2{3,}", re.DOTALL)

#: words that mark a value as a placeholder, matched in lower, UPPER or Capitalized case only
#: (a random mixed-case body spells "DuMmY" far more often than "dummy")
_WORDS = (
    "example", "placeholder", "your[-_]?(?:api|key|openai|own|secret|token)", "replace",
    "changeme", "redacted", "dummy", "xxxxx", "insert[-_]?your", "sample[-_]?key",
    "notarealkey", "not[-_]a[-_]real",
)  # fmt: skip
_PLACEHOLDER_WORDS = re.compile(
    "|".join(v for w in _WORDS for v in (w, w.upper(), w[0].upper() + w[1:]))
)

MIN_ENTROPY = 3.0  # bits per character; random base62 bodies of 40 characters score ~5.0
MIN_SEQUENCE = 6  # "abcdef", "123456", "fedcba"


def shannon_entropy(text: str) -> float:
    """Shannon entropy in bits per character (0.0 for an empty string)."""
    if not text:
        return 0.0
    n = len(text)
    return -sum((c / n) * math.log2(c / n) for c in Counter(text).values())


def longest_sequence(text: str) -> int:
    """Length of the longest run of characters whose code points step by +1 or -1."""
    best = run = 1 if text else 0
    step = 0
    for prev, cur in pairwise(text):
        delta = ord(cur) - ord(prev)
        if delta in (1, -1) and delta == step:
            run += 1
        elif delta in (1, -1):
            step, run = delta, 2
        else:
            step, run = 0, 1
        best = max(best, run)
    return best


def fake_reason(body: str) -> str | None:
    """Why ``body`` (the random part of a key) looks fake, or ``None`` if it looks random."""
    if _PLACEHOLDER_WORDS.search(body):
        return "placeholder word"
    if _REPEATED_UNIT.search(body):
        return "repeated characters"
    if longest_sequence(body) >= MIN_SEQUENCE:
        return "alphabetic or numeric sequence"
    if shannon_entropy(body) < MIN_ENTROPY:
        return "low entropy"
    letters = [c for c in body if c.isalpha()]
    if len(body) >= 32 and (
        not any(c.isupper() for c in letters) or not any(c.islower() for c in letters)
    ):
        return "single-case body (hex digest, not a key)"
    return None
