"""Virtual keys: create (the token is shown once), list, revoke, match a token.

A token is ``kg_`` + key id + secret + checksum (:mod:`keyguard.domain.keys`). The vault stores
only HMAC-SHA256(server key, secret part) in a table of its own (key id, digest, valid_until), so
a later rotation can keep an old secret valid for a grace window. Revocation is permanent.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime

from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import generate_virtual_key, parse_virtual_key
from keyguard.domain.records import KeySecretHash, KeySpec, VirtualKey
from keyguard.domain.secret import Secret
from keyguard.errors import AlreadyExists, KeyFormatError, KeyNotFound
from keyguard.vault.auth import secret_digest
from keyguard.vault.core import VaultCore

_ID_ATTEMPTS = 5


class VirtualKeyService:
    """Virtual keys of one unlocked vault."""

    def __init__(self, core: VaultCore) -> None:
        self._core = core

    def create(self, spec: KeySpec, *, actor: str, source: str) -> tuple[VirtualKey, Secret]:
        core = self._core
        store = core.store
        if store.get_upstream(spec.upstream) is None:
            raise KeyNotFound(f"no upstream credential {spec.upstream!r}")
        for attempt in range(_ID_ATTEMPTS):
            key_id, token = generate_virtual_key()
            parts = parse_virtual_key(token)
            now = core.now()
            key = VirtualKey.from_spec(key_id, spec, now)
            digest = KeySecretHash(key_id, secret_digest(core.server_key, parts.secret), now)
            try:
                with store.transaction():
                    store.add_virtual_key(key, digest)
                    core.audit.append(
                        AuditEvent(
                            action="key.create",
                            actor=actor,
                            subject=key_id,
                            source=source,
                            details={"name": spec.name, "upstream": spec.upstream},
                        )
                    )
            except AlreadyExists:  # 62-bit ids: a collision is rare; draw again
                if attempt == _ID_ATTEMPTS - 1:
                    raise
                continue
            return key, Secret(token, name=f"virtual key {key_id}")
        raise AssertionError("unreachable")

    def get(self, key_id: str) -> VirtualKey:
        key = self._core.store.get_virtual_key(key_id)
        if key is None:
            raise KeyNotFound(f"no virtual key {key_id}")
        return key

    def list(self) -> list[VirtualKey]:
        return self._core.store.list_virtual_keys()

    def revoke(self, key_id: str, *, reason: str | None, actor: str, source: str) -> VirtualKey:
        store = self._core.store
        with store.transaction():
            before = self.get(key_id)
            key = store.revoke_virtual_key(key_id, self._core.now())
            details: dict[str, object] = {"already_revoked": before.revoked}
            if reason:
                details["reason"] = reason
            self._core.audit.append(
                AuditEvent(
                    action="key.revoke", actor=actor, subject=key_id, source=source, details=details
                )
            )
        return key

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        self._core.store.touch_virtual_keys(last_used)

    def match(self, token: str) -> VirtualKey | None:
        """The key ``token`` belongs to when its secret verifies (any state), else ``None``."""
        try:
            parts = parse_virtual_key(token)
        except KeyFormatError:
            return None
        key = self._core.store.get_virtual_key(parts.key_id)
        if key is None:
            return None
        digest = secret_digest(self._core.server_key, parts.secret)

        for stored in self._core.store.list_key_secrets(parts.key_id):
            if hmac.compare_digest(stored.digest, digest):
                return key
        return None
