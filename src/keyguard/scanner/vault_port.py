"""Adapters between the scanner/fixer ports and the keyguard vault, typed structurally.

They depend on a :class:`VaultLike` Protocol and the domain, never on ``keyguard.vault``, so
the scanner keeps its layering; the CLI edge opens the real vault and passes it in.

* :class:`VaultManagedKeys` — :class:`~keyguard.scanner.managed.ManagedKeys`: upstream keys are
  looked up by fingerprint, virtual keys by their token (verified against the keyed hash).
  ``revoke`` revokes a virtual key at once. A leaked upstream key's version is first marked
  compromised in the vault (``mark_upstream_compromised``: persistent, audited as
  ``upstream.compromised``); then, for a CURRENT version, the emergency rotation hook runs when
  the edge supplies one (``emergency(name)``); when it cannot rotate at once, the report says
  which command does.
* :class:`VaultSink` — :class:`~keyguard.scanner.fix.fixer.SecretSink` for ``fix --to-vault``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from keyguard.domain.admin_tokens import ADMIN_TOKEN_PREFIX, parse_admin_token
from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import VIRTUAL_KEY_PREFIX
from keyguard.domain.records import ManagedMatch
from keyguard.domain.secret import Secret
from keyguard.errors import KeyguardError, KeyNotFound, Unauthenticated
from keyguard.scanner.managed import ADMIN_TOKEN


class VaultLike(Protocol):
    """The part of :class:`keyguard.vault.Vault` the adapters use."""

    def find_managed(self, fingerprint: str) -> ManagedMatch | None: ...

    def match_virtual_key(self, token: str) -> ManagedMatch | None: ...

    def revoke_key(
        self, key_id: str, *, reason: str | None = ..., actor: str = ..., source: str | None = ...
    ) -> Any: ...

    def append(self, event: AuditEvent) -> Any: ...

    def authenticate_admin(self, token: str) -> Any: ...

    def revoke_admin_token(
        self, token_id: str, *, actor: str = ..., source: str | None = ...
    ) -> Any: ...

    def get_upstream(self, name: str) -> Any: ...

    def mark_upstream_compromised(
        self,
        name: str,
        version: int,
        reason: str,
        *,
        actor: str = ...,
        source: str | None = ...,
    ) -> Any: ...

    def add_upstream(
        self, name: str, api_key: Secret, *, actor: str = ..., source: str | None = ...
    ) -> Any: ...


class VaultManagedKeys:
    """The vault seen through the scanner's :class:`~keyguard.scanner.managed.ManagedKeys`."""

    def __init__(
        self,
        vault: VaultLike,
        *,
        emergency: Callable[[str], str] | None = None,
        source: str = "scan",
    ) -> None:
        self.vault = vault
        self.emergency = emergency
        self.source = source

    def lookup(self, secret: Secret) -> ManagedMatch | None:
        """The managed key whose value is ``secret``."""
        value = secret.reveal()
        if value.startswith(ADMIN_TOKEN_PREFIX):
            return self._admin_token(value)
        if value.startswith(VIRTUAL_KEY_PREFIX):
            return self.vault.match_virtual_key(value)
        return self.vault.find_managed(secret.fingerprint)

    def _admin_token(self, token: str) -> ManagedMatch | None:
        try:
            record = self.vault.authenticate_admin(token)
        except Unauthenticated as exc:
            # a revoked or expired token has verified first: it is this vault's (an expired one
            # is still revoked when found leaked, like an expired virtual key)
            if exc.code not in ("revoked_admin_token", "expired_admin_token"):
                return None  # not one of this vault's tokens
            token_id = parse_admin_token(token).token_id
            revoked = exc.code == "revoked_admin_token"
            return ManagedMatch(kind=ADMIN_TOKEN, name="", key_id=token_id, revoked=revoked)
        return ManagedMatch(kind=ADMIN_TOKEN, name=record.name, key_id=record.token_id)

    def revoke(self, key: ManagedMatch, *, actor: str, reason: str) -> str:
        """Revoke / rotate / mark compromised; returns one line saying what was done."""
        if key.kind == ADMIN_TOKEN:
            assert key.key_id is not None
            if key.revoked:
                return f"admin token {key.key_id} was already revoked"
            self.vault.revoke_admin_token(key.key_id, actor=actor, source=self.source)
            return f"revoked admin token {key.key_id}"
        if key.kind != "upstream":
            if key.revoked:
                return f"virtual key {key.key_id} was already revoked"
            assert key.key_id is not None
            self.vault.revoke_key(key.key_id, reason=reason, actor=actor, source=self.source)
            return f"revoked virtual key {key.key_id}"
        assert key.version is not None
        label = key.label.value if key.label is not None else None
        # marked first, in every case: the version's history says why it was replaced
        self.vault.mark_upstream_compromised(
            key.name, key.version, reason, actor=actor, source=self.source
        )
        why_not = ""
        if self.emergency is not None and label == "CURRENT":
            try:
                return self.emergency(key.name)
            except KeyguardError as exc:  # e.g. no admin key: fall back to flagging it
                why_not = f" (emergency rotation not possible: {exc})"
        return (
            f"marked upstream credential {key.name!r} version {key.version} compromised "
            f"(recorded in the vault and audited){why_not}; replace it now: keyguard upstream"
            f" revoke {key.name} --now [--from-env VAR]"
        )


class VaultSink:
    """Stores OpenAI keys found by ``keyguard fix --to-vault`` as new upstream credentials."""

    def __init__(self, vault: VaultLike, *, actor: str = "keyguard-fix", source: str = "fix"):
        self.vault = vault
        self.actor = actor
        self.source = source

    def _free_name(self, env_name: str) -> str:
        base = env_name.lower().replace("_", "-")
        name, n = base, 1
        while True:
            try:
                self.vault.get_upstream(name)
            except KeyNotFound:
                return name
            n += 1
            name = f"{base}-{n}"

    def store(self, name: str, secret: Secret) -> str:
        """Store ``secret`` (unless the vault already holds it); say how to run with it."""
        known = self.vault.find_managed(secret.fingerprint)
        if known is not None:
            upstream = known.name
            what = f"already in the vault as {known.description}"
        else:
            upstream = self._free_name(name)
            self.vault.add_upstream(upstream, secret, actor=self.actor, source=self.source)
            what = f"stored as upstream credential {upstream!r}"
        return f"{name}: {what}; run with `keyguard run --name {name} --upstream {upstream} -- …`"
