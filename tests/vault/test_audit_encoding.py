"""The audit fast paths give exactly the bytes and texts of the generic forms."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

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
