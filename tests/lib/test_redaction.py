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


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["plain", " ", "sk-", "kg_", "kga_", "…", "x" * 30, "SECRET"]), max_size=12
    ),
    st.integers(min_value=0, max_value=3),
)
def test_needs_redaction_agrees_with_redact(parts: list[str], keys: int) -> None:
    """The edge supervisor's cheap check says "nothing to redact" only when redact agrees."""
    from keyguard.domain.redaction import needs_redaction

    secret = "custom-" + secrets.token_hex(8)
    register(secret)
    pieces = [secret if p == "SECRET" else p for p in parts]
    pieces += [generate_openai_style_key("proj") for _ in range(keys)]
    text = "".join(pieces)
    assert needs_redaction(text) == (redact(text) != text)


def test_needs_redaction_with_many_known_secrets() -> None:
    """Past a few dozen known values the check uses the alternation regex: same answers."""
    from keyguard.domain.redaction import needs_redaction

    values = ["many-" + secrets.token_hex(8) for _ in range(40)]
    for v in values:
        register(v)
    assert needs_redaction(f"a {values[17]} b")
    assert not needs_redaction("nothing secret in here")
