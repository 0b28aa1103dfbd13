"""Fast virtual-key authentication for the gateway.

:class:`KeyAuthenticator` keeps every virtual key and its secret hashes in an in-memory map
(key id -> entry), so a verification costs one checksum check, one HMAC-SHA256 and a dict
lookup, with no I/O. The map is reloaded when the store's change counter
(``store.generation()``) moves; the counter is read at most once per ``refresh_interval``
seconds (and on :meth:`KeyAuthenticator.refresh`), so a revocation made by another process
reaches this one within that interval.

Failure messages are generic and never contain key material: ``invalid API key`` (malformed,
bad checksum, unknown id, wrong secret), ``API key revoked``, ``API key expired``. The key's
state is reported only to a caller that presented the right secret.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from keyguard.domain.keys import parse_virtual_key
from keyguard.domain.policy import check_key_state
from keyguard.domain.records import VirtualKey
from keyguard.errors import (
    ConfigError,
    KeyFormatError,
    StorageError,
    StorageUnavailable,
    Unauthenticated,
)
from keyguard.storage.ports import VaultStore

INVALID = "invalid API key"


def secret_digest(server_key: bytes, secret_part: str) -> bytes:
    """The stored form of a virtual key's secret part: HMAC-SHA256 under the server secret."""
    return hmac.digest(server_key, secret_part.encode("ascii"), "sha256")


class GenerationWatch:
    """Tells whether the store changed, reading its counter at most once per interval."""

    def __init__(
        self,
        store: VaultStore,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = interval
        self._monotonic = monotonic
        self._next_check = float("-inf")
        self.seen: int | None = None

    def poll(self, *, force: bool = False) -> int | None:
        """The new generation when it changed since the last :meth:`mark`, else ``None``."""
        now = self._monotonic()
        if not force and now < self._next_check:
            return None
        self._next_check = now + self._interval
        current = self._store.generation()
        return current if current != self.seen else None

    def mark(self, generation: int) -> None:
        self.seen = generation

    def expire(self) -> None:
        """Make the next :meth:`poll` read the counter."""
        self._next_check = float("-inf")


@dataclass(frozen=True)
class _Entry:
    key: VirtualKey
    digests: tuple[tuple[bytes, datetime | None], ...]


class KeyAuthenticator:
    """Verifies virtual keys against an in-memory snapshot of the vault's keys."""

    def __init__(
        self,
        store: VaultStore,
        server_key: bytes,
        *,
        refresh_interval: float = 0.25,
        max_staleness: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._server_key = server_key
        self._watch = GenerationWatch(store, refresh_interval, monotonic)
        self._monotonic = monotonic
        self._max_staleness = max_staleness
        self._entries: dict[str, _Entry] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._dummy = secret_digest(server_key, "x" * 44)
        self.refresh(force=True)

    def __repr__(self) -> str:
        return f"KeyAuthenticator(keys={len(self._entries)}, generation={self._watch.seen})"

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the snapshot when the store changed (``force``: check the counter now).

        Returns whether it reloaded. A storage failure keeps the old snapshot for up to
        ``max_staleness`` seconds, then raises :class:`StorageUnavailable` (fail closed).
        """
        try:
            generation = self._watch.poll(force=force)
            if generation is None:
                return False
            with self._lock:
                secrets: dict[str, list[tuple[bytes, datetime | None]]] = {}
                for s in self._store.list_key_secrets():
                    secrets.setdefault(s.key_id, []).append((s.digest, s.valid_until))
                entries = {}
                for k in self._store.list_virtual_keys():
                    try:
                        _ = k.policy  # compile allowlists now, not on the first request
                    except ConfigError:
                        continue  # a stored policy that does not compile: the key cannot be used
                    entries[k.key_id] = _Entry(k, tuple(secrets.get(k.key_id, ())))
                self._entries = entries
                self._watch.mark(generation)
                self._loaded_at = self._monotonic()
            return True
        except StorageError as exc:
            if self._monotonic() - self._loaded_at > self._max_staleness:
                raise StorageUnavailable(
                    "virtual keys cannot be loaded and the cached copy is too old"
                ) from exc
            return False

    def invalidate(self) -> None:
        """Check the store on the next call (used after a write in this process)."""
        self._watch.expire()

    def get(self, key_id: str) -> VirtualKey | None:
        """The cached record of ``key_id`` (no secret check)."""
        entry = self._entries.get(key_id)
        return entry.key if entry is not None else None

    def authenticate(self, token: str, now: datetime) -> VirtualKey:
        """Return the key ``token`` belongs to, or raise :class:`Unauthenticated`."""
        self.refresh()
        try:
            parts = parse_virtual_key(token)
        except (KeyFormatError, TypeError):
            raise Unauthenticated(INVALID) from None
        digest = secret_digest(self._server_key, parts.secret)
        entry = self._entries.get(parts.key_id)
        if entry is None:
            hmac.compare_digest(digest, self._dummy)  # same work as a known id
            raise Unauthenticated(INVALID)
        matched = False
        for stored, valid_until in entry.digests:
            if hmac.compare_digest(stored, digest) and (valid_until is None or now < valid_until):
                matched = True
        if not matched:
            raise Unauthenticated(INVALID)
        check_key_state(entry.key, now=now)
        return entry.key
