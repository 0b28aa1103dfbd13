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

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from keyguard.domain.keys import (
    CHECKSUM_LENGTH,
    KEY_ID_LENGTH,
    VIRTUAL_KEY_LENGTH,
    VIRTUAL_KEY_PREFIX,
    VIRTUAL_KEY_RE,
    checksum,
)
from keyguard.domain.policy import check_key_state
from keyguard.domain.records import VirtualKey
from keyguard.errors import (
    ConfigError,
    StorageError,
    StorageUnavailable,
    Unauthenticated,
)
from keyguard.storage.ports import VaultStore

INVALID = "invalid API key"
_PREFIX = len(VIRTUAL_KEY_PREFIX)


def secret_digest(server_key: bytes, secret_part: str) -> bytes:
    """The stored form of a virtual key's secret part: HMAC-SHA256 under the server secret."""
    return hmac.digest(server_key, secret_part.encode("ascii"), "sha256")


class _KeyedSha256:
    """HMAC-SHA256 with the key schedule done once (RFC 2104: the inner and outer hash states
    after absorbing the padded key are kept and copied), about twice as fast per message as
    ``hmac.digest``; the output is identical (tested against :func:`secret_digest`)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __repr__(self) -> str:
        return "_KeyedSha256()"

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token with a valid checksum, else ``None``.

    Same decision as :func:`keyguard.domain.keys.parse_virtual_key` (tested), without building
    an exception or a dataclass on the hot path.
    """
    if len(token) != VIRTUAL_KEY_LENGTH or VIRTUAL_KEY_RE.fullmatch(token) is None:
        return None
    body = token[_PREFIX:-CHECKSUM_LENGTH]
    if checksum(body) != token[-CHECKSUM_LENGTH:]:
        return None
    return body[:KEY_ID_LENGTH], body[KEY_ID_LENGTH:]


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
        self.next_check = float("-inf")
        self.seen: int | None = None

    def poll(self, *, force: bool = False) -> int | None:
        """The new generation when it changed since the last :meth:`mark`, else ``None``."""
        now = self._monotonic()
        if not force and now < self.next_check:
            return None
        self.next_check = now + self._interval
        current = self._store.generation()
        return current if current != self.seen else None

    def mark(self, generation: int) -> None:
        self.seen = generation

    def expire(self) -> None:
        """Make the next :meth:`poll` read the counter."""
        self.next_check = float("-inf")


#: seconds between forced store checks triggered by keys the snapshot does not know
RECHECK_INTERVAL = 0.05


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
        self._last_recheck = float("-inf")
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._mac = _KeyedSha256(server_key)
        self._dummy = self._mac.digest(b"x" * 44)
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

    def current(self, key_id: str) -> VirtualKey | None:
        """The snapshot's record of ``key_id`` after the usual refresh check.

        A caller that verified a token earlier may reuse that result while this returns the very
        same object: any write to keys (revocation, rotation, a new secret) replaces the
        snapshot's objects, so an identity check sees it as soon as the snapshot reloads.
        """
        if self._monotonic() >= self._watch.next_check:
            self.refresh()
        entry = self._entries.get(key_id)
        return entry.key if entry is not None else None

    def authenticate(self, token: str, now: datetime) -> VirtualKey:
        """Return the key ``token`` belongs to, or raise :class:`Unauthenticated`."""
        if self._monotonic() >= self._watch.next_check:
            self.refresh()
        parts = split_token(token) if isinstance(token, str) else None
        if parts is None:
            raise Unauthenticated(INVALID)
        key_id, secret = parts
        digest = self._mac.digest(secret.encode("ascii"))
        entry = self._match(key_id, digest, now)
        # a key created or rotated a moment ago in another process: look at the store now
        # rather than refuse it until the next periodic check (bounded: see _may_recheck)
        if entry is None and self._may_recheck() and self.refresh(force=True):
            entry = self._match(key_id, digest, now)
        if entry is None:
            raise Unauthenticated(INVALID)
        check_key_state(entry.key, now=now)
        return entry.key

    def _match(self, key_id: str, digest: bytes, now: datetime) -> _Entry | None:
        entry = self._entries.get(key_id)
        if entry is None:
            hmac.compare_digest(digest, self._dummy)  # same work as a known id
            return None
        matched = False
        for stored, valid_until in entry.digests:
            if hmac.compare_digest(stored, digest) and (valid_until is None or now < valid_until):
                matched = True
        return entry if matched else None

    def _may_recheck(self) -> bool:
        """At most one forced store check per ``RECHECK_INTERVAL`` for unknown keys, so a
        flood of bad keys (throttled per IP by the gateway anyway) cannot flood the store."""
        now = self._monotonic()
        if now - self._last_recheck < RECHECK_INTERVAL:
            return False
        self._last_recheck = now
        return True
