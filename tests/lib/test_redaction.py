"""Value-based and pattern-based redaction, and the logging filter."""

from __future__ import annotations

import logging
import secrets

from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.domain.keys import generate_openai_style_key, generate_virtual_key
from keyguard.domain.redaction import RedactingFilter, redact, register
from keyguard.domain.secret import Secret


def test_redacts_registered_values_of_any_shape() -> None:
    custom = "pw-" + secrets.token_hex(12)
    Secret(custom)
    out = redact(f"connecting with {custom}!")
    assert custom not in out and "connecting with" in out


def test_redacts_key_shapes_never_loaded() -> None:
    keys = [generate_openai_style_key(k) for k in ("proj", "svcacct", "admin", "user")]
    keys.append(generate_virtual_key()[1])
    text = " | ".join(f"k={k}" for k in keys)
    out = redact(text)
    for k in keys:
        assert k not in out
        assert k[-4:] in out  # redacted form keeps the last four


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=50), st.text(max_size=50))
def test_redacts_embedded_key_in_any_text(before: str, after: str) -> None:
    key = generate_openai_style_key("proj")
    out = redact(before + key + after)
    assert key not in out


def test_logging_filter_covers_args_and_tracebacks() -> None:
    key = generate_openai_style_key("svcacct")
    register(key)
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("redaction-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("using %s", key)
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    joined = "\n".join(records)
    assert key not in joined
    assert "ValueError" in joined and "using sk-svcacct-…" in joined
