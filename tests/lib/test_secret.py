"""Secret never shows its value through any printing path."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import pytest

from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret


@pytest.fixture
def value() -> str:
    return generate_openai_style_key("proj")


def test_printing_paths_never_show_value(value: str) -> None:
    s = Secret(value, name="OPENAI_API_KEY")
    rendered = [repr(s), str(s), f"{s}", f"{s!r}", f"{s:>200}", "%s" % s, "%r" % (s,),
                "{}".format(s), str([s]), str({"k": s})]
    for text in rendered:
        assert value not in text
        assert value[8:40] not in text
    assert s.reveal() == value
    assert s.redacted.startswith("sk-proj-…") and s.redacted.endswith(value[-4:])
    assert s.fingerprint in repr(s)


def test_exception_and_logging(value: str, caplog: pytest.LogCaptureFixture) -> None:
    s = Secret(value)
    with pytest.raises(RuntimeError) as info:
        raise RuntimeError(f"failed with {s}")
    assert value not in str(info.value)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key is %s / %r", s, s)
    assert value not in caplog.text
    assert s.redacted in caplog.text


def test_refuses_serialisation(value: str) -> None:
    s = Secret(value)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        json.dumps({"key": s})
    assert copy.deepcopy(s) is s


def test_equality_and_hash(value: str) -> None:
    a, b = Secret(value), Secret(value)
    assert a == b and hash(a) == hash(b)
    assert a != Secret(generate_openai_style_key("proj"))
    with pytest.raises(TypeError):
        Secret(value.encode())  # type: ignore[arg-type]
