"""Virtual-key rotation: a new secret for the same key id, the old one valid for a grace window.

The key's record (id, scope, limits, budget, usage, audit history) does not change; only its
secret hashes do. Every secret without an end (or ending later than the grace window) is given
``valid_until = now + grace``; the new secret has none. :class:`~keyguard.vault.auth.
KeyAuthenticator` honours ``valid_until``, and every replica picks the change up through the
store's generation counter.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import generate_virtual_key, parse_virtual_key
from keyguard.domain.records import KeySecretHash, VirtualKey
from keyguard.domain.secret import Secret
from keyguard.errors import KeyNotFound, VaultError
from keyguard.vault.auth import secret_digest
from keyguard.vault.core import VaultCore

DEFAULT_GRACE = timedelta(hours=24)


def rotate_virtual_key(
    core: VaultCore, key_id: str, *, grace: timedelta, actor: str, source: str
) -> tuple[VirtualKey, Secret]:
    """Issue a new token for ``key_id``; the old secrets stay valid for ``grace``."""
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    store = core.store
    with store.transaction():
        key = store.get_virtual_key(key_id)
        if key is None:
            raise KeyNotFound(f"no virtual key {key_id}")
        now = core.now()
        if key.revoked or key.expired(now):
            raise VaultError(f"virtual key {key_id} is revoked or expired: create a new key")
        until = now + grace
        ended = 0
        for old in store.list_key_secrets(key_id):
            if old.valid_until is None or old.valid_until > until:
                store.set_key_secret_valid_until(key_id, old.digest, until)
                ended += 1
        _, token = generate_virtual_key(key_id)
        parts = parse_virtual_key(token)
        store.add_key_secret(
            KeySecretHash(key_id, secret_digest(core.server_key, parts.secret), now)
        )
        core.audit.append(
            AuditEvent(
                "key.rotate",
                actor,
                key_id,
                source,
                details={"grace_s": int(grace.total_seconds()), "old_secrets_ending": ended},
            )
        )
    return key, Secret(token, name=f"virtual key {key_id}")


def key_rotated_at(core: VaultCore) -> dict[str, datetime]:
    """Each virtual key's newest secret's creation time (its age for rotation schedules)."""
    out: dict[str, datetime] = {}
    for s in core.store.list_key_secrets():
        if s.key_id not in out or s.created_at > out[s.key_id]:
            out[s.key_id] = s.created_at
    return out
