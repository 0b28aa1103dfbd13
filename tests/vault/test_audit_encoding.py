"""The audit fast paths give exactly the bytes and texts of the generic forms."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.domain import audit as chain
from keyguard.domain.redaction import redact, redact_cached, register

WHEN = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=timezone.utc)


def reference(fmt: object, when: datetime, texts: tuple[str, ...], details: object) -> bytes:
    action, actor, subject, source, outcome = texts
    doc = {
        "v": fmt,
        "time": when.isoformat(),
        "action": action,
        "actor": actor,
        "subject": subject,
        "source": source,
        "outcome": outcome,
        "details": details,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@pytest.mark.parametrize(
    ("texts", "details"),
    [
        (("gateway.request", "key:abc", "POST /v1/x", "127.0.0.1", "ok"), {}),
        (
            (
                "gateway.request",
                "anonymous",
                'GET /v1/"q"\\\u00e9\u2603\ud83d\ude00',
                "::1",
                "denied",
            ),
            {"status": 401, "latency_ms": 0.25, "model": None, "z": True, "a": [1, "x", None]},
        ),
        (("a", "b", "c", "d", "e"), {"nested": {"b": 1, "a": {"y": "\n", "x": -2.5e-7}}}),
    ],
)
def test_canonical_parts_match_json_dumps(
    texts: tuple[str, ...], details: dict[str, object]
) -> None:
    for when in (WHEN, WHEN.astimezone(timezone(timedelta(hours=2))), WHEN.replace(microsecond=0)):
        content, when_iso, details_json = chain.canonical_parts(1, when, *texts, details)
        assert content == reference(1, when, texts, details)
        assert chain.canonical_content(1, when, *texts, details) == content
        assert when_iso == when.isoformat()
        assert details_json == json.dumps(details, sort_keys=True, separators=(",", ":"))


def test_chain_mac_object_matches_function() -> None:
    key = b"k" * 32
    mac = chain.ChainMac(key)
    for prev, content in ((chain.GENESIS, b"{}"), ("ab" * 32, b'{"x":1}' * 50)):
        assert mac(prev, content) == chain.chain_mac(key, prev, content)


def test_redact_cached_sees_secrets_registered_later() -> None:
    value = "zq-later-registered-secret-value-1234"
    text = f"GET /v1/models?x={value}"
    assert redact_cached(text) == redact(text)
    register(value)
    assert value not in redact_cached(text)
    assert redact_cached(text) == redact(text)
    key_shaped = "sk-" + "A1b2" * 12
    assert redact_cached(key_shaped) == redact(key_shaped) != key_shaped


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
texts = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=6, unique=True),
    data=st.data(),
    parts=st.tuples(texts, texts, texts, texts, texts),
    micro=st.integers(min_value=0, max_value=999_999),
    offset=st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_uniform_encoder_matches_canonical_parts(
    keys: list[str],
    data: st.DataObject,
    parts: tuple[str, str, str, str, str],
    micro: int,
    offset: int,
) -> None:
    values = [data.draw(scalars) for _ in keys]
    action, actor, subject, source, outcome = parts
    when = WHEN.replace(microsecond=micro).astimezone(timezone(timedelta(minutes=offset)))
    encode = chain.UniformEncoder(keys)
    got = encode(when, action, actor, subject, source, outcome, values)
    want = chain.canonical_parts(
        1, when, action, actor, subject, source, outcome, dict(zip(keys, values, strict=True))
    )
    assert got == want


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), [1], {"a": 1}, b"x"])
def test_uniform_encoder_rejects_what_json_scalars_are_not(bad: object) -> None:
    encode = chain.UniformEncoder(["k"])
    with pytest.raises((ValueError, TypeError)):
        encode(WHEN, "a", "b", "c", "d", "e", [bad])


def test_uniform_encoder_rejects_duplicate_keys() -> None:
    with pytest.raises(ValueError, match="distinct"):
        chain.UniformEncoder(["k", "k"])
