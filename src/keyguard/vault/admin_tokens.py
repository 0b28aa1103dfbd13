"""Admin tokens of keyguard's admin API: create (shown once), list, revoke, authenticate.

The vault stores only HMAC-SHA256 of a token's secret part under the vault's server key, with a
domain-separation prefix so the digest of an admin token can never equal that of a virtual key
with the same secret. Verification is one HMAC and a constant-time compare; failures say only
``invalid admin token`` (a revoked token is reported as such only to a caller that presented
its right secret). :class:`AdminTokenFacade` is mixed into :class:`~keyguard.vault.Vault`.
"""

from __future__ import annotations

import hmac

from keyguard.domain.admin_tokens import (
    AdminScope,
    AdminToken,
    generate_admin_token,
    parse_admin_token,
)
from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import check_name
from keyguard.domain.secret import Secret
from keyguard.errors import AlreadyExists, KeyFormatError, KeyNotFound, Unauthenticated
from keyguard.vault.core import VaultCore

_DOMAIN = b"keyguard admin token v1\x00"
_ID_ATTEMPTS = 5
INVALID = "invalid admin token"


def admin_token_digest(server_key: bytes, secret_part: str) -> bytes:
    """The stored form of an admin token's secret part."""
    return hmac.digest(server_key, _DOMAIN + secret_part.encode("ascii"), "sha256")


class AdminTokenService:
    """Admin tokens of one unlocked vault."""

    def __init__(self, core: VaultCore) -> None:
        self._core = core

    def create(
        self, name: str, scope: AdminScope, *, actor: str, source: str
    ) -> tuple[AdminToken, Secret]:
        check_name("admin token name", name)
        core = self._core
        for attempt in range(_ID_ATTEMPTS):
            token_id, token = generate_admin_token()
            parts = parse_admin_token(token)
            record = AdminToken(token_id, name, AdminScope(scope), core.now(), created_by=actor)
            try:
                with core.store.transaction():
                    core.store.add_admin_token(
                        record, admin_token_digest(core.server_key, parts.secret)
                    )
                    core.audit.append(
                        AuditEvent(
                            "admin_token.create",
                            actor,
                            token_id,
                            source,
                            details={"name": name, "scope": record.scope.value},
                        )
                    )
            except AlreadyExists:  # 62-bit ids: a collision is rare; draw again
                if attempt == _ID_ATTEMPTS - 1:
                    raise
                continue
            return record, Secret(token, name=f"admin token {token_id}")
        raise AssertionError("unreachable")

    def list(self) -> list[AdminToken]:
        return self._core.store.list_admin_tokens()

    def revoke(self, token_id: str, *, actor: str, source: str) -> AdminToken:
        core = self._core
        with core.store.transaction():
            found = core.store.get_admin_token(token_id)
            if found is None:
                raise KeyNotFound(f"no admin token {token_id}")
            record = core.store.revoke_admin_token(token_id, core.now())
            core.audit.append(
                AuditEvent(
                    "admin_token.revoke",
                    actor,
                    token_id,
                    source,
                    details={"name": record.name, "already_revoked": found[0].revoked},
                )
            )
        return record

    def authenticate(self, token: str) -> AdminToken:
        """The token's record; :class:`Unauthenticated` (never echoing the token) otherwise."""
        try:
            parts = parse_admin_token(token)
        except KeyFormatError:
            raise Unauthenticated(INVALID, code="invalid_admin_token") from None
        found = self._core.store.get_admin_token(parts.token_id)
        digest = admin_token_digest(self._core.server_key, parts.secret)
        stored = found[1] if found is not None else bytes(len(digest))
        if not hmac.compare_digest(stored, digest) or found is None:
            raise Unauthenticated(INVALID, code="invalid_admin_token")
        if found[0].revoked:
            raise Unauthenticated("admin token revoked", code="revoked_admin_token")
        return found[0]


class AdminTokenFacade:
    """Methods of :class:`~keyguard.vault.Vault` about admin tokens."""

    _core: VaultCore

    def _src(self, source: str | None) -> str:
        raise NotImplementedError

    def create_admin_token(
        self,
        name: str,
        scope: AdminScope | str,
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> tuple[AdminToken, Secret]:
        """A new admin token; the token (a :class:`Secret`) is returned once, never stored."""
        return AdminTokenService(self._core).create(
            name, AdminScope(scope), actor=actor, source=self._src(source)
        )

    def list_admin_tokens(self) -> list[AdminToken]:
        """Every admin token's record (revoked ones too), oldest first."""
        return AdminTokenService(self._core).list()

    def revoke_admin_token(
        self, token_id: str, *, actor: str = "system", source: str | None = None
    ) -> AdminToken:
        """Revoke an admin token at once and for good (idempotent)."""
        return AdminTokenService(self._core).revoke(token_id, actor=actor, source=self._src(source))

    def authenticate_admin(self, token: str) -> AdminToken:
        """Verify an admin token (one store read); :class:`Unauthenticated` when it fails."""
        return AdminTokenService(self._core).authenticate(token)
