"""printable(): untrusted text made safe for a terminal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyguard.domain.display import printable


def test_controls_and_bidi_are_escaped_the_rest_kept() -> None:
    assert (
        printable("plain ascii, ünïcödé, 日本語, emoji 🙂")
        == "plain ascii, ünïcödé, 日本語, emoji 🙂"
    )
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("tab\there\r\nnl") == "tab\\x09here\\x0d\\x0anl"
    assert printable("csi\x9b31m del\x7f") == "csi\\x9b31m del\\x7f"
    assert printable("\u202eevil\u2066x\u2069\u200f") == "\\u202eevil\\u2066x\\u2069\\u200f"


@given(st.text())
def test_output_never_holds_a_control_character(text: str) -> None:
    out = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert not any(
        c in out for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )
    if out == text:
        assert printable(out) == out
