"""Key events over Redis pub/sub: delivery, resync after (re)connecting, reconnect by itself."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import pytest
import redis

from keyguard.limits.events import EventListener, KeyEvents

from .conftest import REDIS_URL


def test_events_delivered_and_resync_on_connect(redis_client: redis.Redis) -> None:
    channel = f"kgtest:{secrets.token_hex(4)}"
    got: list[dict[str, Any]] = []
    resyncs = threading.Semaphore(0)
    listener = EventListener(
        lambda: redis.Redis.from_url(REDIS_URL),
        on_event=got.append,
        on_resync=resyncs.release,
        channel=channel,
    ).start()
    try:
        assert resyncs.acquire(timeout=5)  # connected: resynced once
        pub = KeyEvents(redis_client, channel)
        assert pub.publish("key.revoked", "abc123") == 1
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got and got[0]["kind"] == "key.revoked" and got[0]["subject"] == "abc123"
        redis_client.publish(channel, b"not json")  # ignored, the listener survives
        pub.publish("key.rotated", "abc123")
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e["kind"] for e in got] == ["key.revoked", "key.rotated"]
        # drop the listener's connection: it reconnects and resyncs (messages may have been missed)
        for c in redis_client.client_list():
            if c.get("cmd") in ("subscribe", "ping") and int(c.get("sub", 0)) > 0:
                redis_client.client_kill_filter(_id=c["id"])
        assert resyncs.acquire(timeout=10)
    finally:
        listener.close()


def test_unknown_kind_is_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        KeyEvents(redis_client).publish("key.stolen", "x")
