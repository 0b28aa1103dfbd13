"""Value-based and pattern-based redaction of secrets in text.

The process-wide registry holds every secret value the process has loaded (every
:class:`~keyguard.domain.secret.Secret` registers itself). :func:`redact` replaces each known
value, and anything that has the shape of an OpenAI or keyguard key, with its redacted form.
"""

from __future__ import annotations

import re
import threading

from keyguard.domain.keys import ANY_KEY_RE, redacted_form

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: values shorter than this are not redacted by value (they would mangle ordinary text)
MIN_VALUE_LENGTH = 8


def register(value: str) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text from now on."""
    global _pattern
    if len(value) < MIN_VALUE_LENGTH:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        # longest first so a value that contains another is replaced whole
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """Return ``text`` with every known secret and every key-shaped string redacted."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(lambda m: redacted_form(m.group(0)), text)
    return ANY_KEY_RE.sub(lambda m: redacted_form(m.group(0)), text)
