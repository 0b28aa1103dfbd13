"""Value-based and pattern-based redaction of secrets in text.

The process-wide registry holds every secret value the process has loaded (every
:class:`~keyguard.domain.secret.Secret` registers itself). :func:`redact` replaces each known
value, and anything that has the shape of an OpenAI or keyguard key, with its redacted form.
"""

from __future__ import annotations

import logging
import re
import threading

from keyguard.domain.keys import ANY_KEY_RE, redacted_form

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None
#: the values as a tuple (replaced whole on register): a few substring tests are cheaper
#: than the alternation regex when only a presence check is needed
_value_list: tuple[str, ...] = ()

#: values shorter than this are not redacted by value (they would mangle ordinary text)
MIN_VALUE_LENGTH = 8


def register(value: str) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text from now on."""
    global _pattern, _value_list
    if len(value) < MIN_VALUE_LENGTH:
        return
    with _lock:
        if value in _values:
            return
        _values.add(value)
        # longest first so a value that contains another is replaced whole
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _value_list = tuple(ordered)


def _redact_with(pattern: re.Pattern[str] | None, text: str) -> str:
    if pattern is not None:
        text = pattern.sub(lambda m: redacted_form(m.group(0)), text)
    return ANY_KEY_RE.sub(lambda m: redacted_form(m.group(0)), text)


def needs_redaction(text: str) -> bool:
    """True when :func:`redact` would change ``text`` (a known secret or a key-shaped string
    in it): a check without building a new string."""
    values = _value_list
    if len(values) <= 32:
        if any(v in text for v in values):
            return True
    else:
        pattern = _pattern
        if pattern is not None and pattern.search(text) is not None:
            return True
    # every alternative of ANY_KEY_RE starts with one of these: a substring test first
    if "sk-" not in text and "kg_" not in text and "kga_" not in text:
        return False
    return ANY_KEY_RE.search(text) is not None


def redact(text: str) -> str:
    """Return ``text`` with every known secret and every key-shaped string redacted."""
    return _redact_with(_pattern, text)


#: memo of :func:`redact_cached`: bound to the value pattern it was computed with, so a newly
#: registered secret starts a fresh memo (results computed before it are never reused)
_memo: tuple[re.Pattern[str] | None, dict[str, str]] = (None, {})
MEMO_MAX_TEXT = 512
MEMO_MAX_ENTRIES = 4096


def redact_cached(text: str) -> str:
    """:func:`redact` with a bounded memo for short, repeated texts (audit fields such as a
    request path, a model name or a client address): same result, without the regex passes
    when the same text was redacted before under the same set of known secrets."""
    global _memo
    pattern = _pattern
    owner, memo = _memo
    if owner is not pattern:
        memo = {}
        _memo = (pattern, memo)
    out = memo.get(text)
    if out is None:
        out = _redact_with(pattern, text)
        if len(text) <= MEMO_MAX_TEXT:
            if len(memo) >= MEMO_MAX_ENTRIES:
                memo.clear()
            memo[text] = out
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets in the message, its arguments and tracebacks.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``) or use
    :func:`install_redaction` to attach it to every handler of the root logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            )
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach one :class:`RedactingFilter` to every handler of ``logger`` (default: root).

    Handlers added later are not covered; call again after configuring logging.
    """
    target = logger or logging.getLogger()
    filt = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
