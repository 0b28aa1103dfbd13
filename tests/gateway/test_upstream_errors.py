"""Cleaning upstream error bodies (``gateway/upstream_errors.py``): nothing of a key survives,
in any of the forms a key can take in an error message, in linear time."""

from __future__ import annotations

import json
import secrets
import string
import time

from keyguard.domain.keys import generate_openai_style_key, redacted_form
from keyguard.gateway.upstream_errors import scrub_text

_ALNUM = string.ascii_letters + string.digits


def _tail() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(4))


def test_openai_mask_leaves_nothing() -> None:
    key = generate_openai_style_key("proj")
    text = f"Incorrect API key provided: {key[:8]}{'*' * 39}{key[-4:]}. See the docs."
    out = scrub_text(text)
    assert out == "Incorrect API key provided: [redacted key]. See the docs."


def test_mask_around_an_ellipsis_leaves_not_even_the_last_four() -> None:
    tail = _tail()
    for ellipsis in ("…", "\\u2026"):
        out = scrub_text(f"bad key sk-abcde*****{ellipsis}*****{tail} here")
        assert tail not in out, out
        assert "*" not in out
        assert out == "bad key [redacted key] here"


def test_redacted_form_escaped_in_json_is_removed() -> None:
    key = generate_openai_style_key("proj")
    shown = redacted_form(key)  # sk-proj-…wxyz
    body = json.dumps({"error": {"message": f"key {shown} refused"}})  # ensure_ascii: \u2026
    assert "\\u2026" in body
    out = scrub_text(body)
    assert key[-4:] not in out
    assert "[redacted key]" in out


def test_long_runs_of_key_characters_cost_linear_time() -> None:
    """A 256 KiB run of word characters: quadratic matching took minutes; linear, milliseconds
    (bound far above either machine noise or the linear cost)."""
    run = "a" * 256 * 1024
    t0 = time.process_time()
    assert scrub_text(run) == run
    assert scrub_text("*" * 256 * 1024) == "[redacted key]"
    assert time.process_time() - t0 < 5.0
