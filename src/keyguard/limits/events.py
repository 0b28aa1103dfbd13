"""Key change events over Redis pub/sub: revocations and rotations reach every replica at once.

Whoever changes a key (``keyguard key revoke``, the admin API, a rotation) calls
:meth:`KeyEvents.publish` after the change is committed. Every gateway replica runs an
:class:`EventListener` that refreshes its authenticator when a message arrives, so the change
is enforced within milliseconds. Pub/sub is fire-and-forget: a replica that was disconnected
misses messages, so the listener also refreshes after every (re)connection, and the
authenticator's own periodic check of ``store.generation()`` is the backstop that bounds how
long a missed message can matter.

Messages carry a kind and a key id (or upstream name), never key material.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from keyguard.limits.redis_sync import redis_errors

log = logging.getLogger("keyguard.limits.events")

DEFAULT_CHANNEL = "keyguard:events"
KINDS = frozenset({"key.created", "key.revoked", "key.rotated", "upstream.rotated", "resync"})


class KeyEvents:
    """Publishes key change events."""

    def __init__(self, client: redis.Redis, channel: str = DEFAULT_CHANNEL) -> None:
        self._client = client
        self.channel = channel

    def publish(self, kind: str, subject: str) -> int:
        """Announce a committed change; returns how many listeners received it."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        payload = json.dumps({"kind": kind, "subject": subject, "at": time.time()})
        with redis_errors():
            return int(self._client.publish(self.channel, payload))


class EventListener:
    """Subscribes in a daemon thread; calls ``on_event(event)`` per message and ``on_resync()``
    after each (re)connection. Reconnects by itself with exponential backoff."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        on_event: Callable[[dict[str, Any]], None],
        on_resync: Callable[[], None],
        *,
        channel: str = DEFAULT_CHANNEL,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self._connect = connect
        self._on_event = on_event
        self._on_resync = on_resync
        self._channel = channel
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.received = 0

    def start(self) -> EventListener:
        self._thread = threading.Thread(target=self._run, name="keyguard-events", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            client = None
            try:
                client = self._connect()
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self._channel)
                self.connected.set()
                delay = self._backoff[0]
                self._call(self._on_resync)  # anything may have happened while we were away
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        self.received += 1
                        self._dispatch(msg.get("data"))
                pubsub.close()
            except (redis.RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("key events: lost Redis (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
            finally:
                if client is not None:
                    client.close()

    def _dispatch(self, data: object) -> None:
        try:
            event = json.loads(data if isinstance(data, (str, bytes)) else b"")
        except ValueError:
            return
        if isinstance(event, dict) and event.get("kind") in KINDS:
            self._call(lambda: self._on_event(event))

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a failing refresh must not kill the listener
            log.warning("key events: handler failed: %s", type(exc).__name__)
