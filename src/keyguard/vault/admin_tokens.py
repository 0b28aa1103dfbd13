"""Admin tokens of keyguard's admin API: create (shown once), list, revoke, authenticate.

The vault stores only HMAC-SHA256 of a token's secret part under the vault's server key, with a
domain-separation prefix so the digest of an admin token can never equal that of a virtual key
with the same secret. Verification is one HMAC and a constant-time compare; failures say only
``invalid admin token`` (a revoked or expired token is reported as such only to a caller that
presented its right secret). Expiry is checked at every authentication against the vault's
clock. With ``record_use`` (the admin API), a successful authentication records
``last_used_at``, at most once per :data:`~keyguard.domain.admin_tokens.LAST_USED_INTERVAL`
per token: otherwise authenticating stays one read. :class:`AdminTokenFacade` is mixed into
:class:`~keyguard.vault.Vault`.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import replace
from datetime import datetime

from keyguard.domain.admin_tokens import (
    LAST_USED_INTERVAL,
    AdminScope,
    AdminToken,
    check_admin_token_state,
    generate_admin_token,
    last_used_due,
    parse_admin_token,
)
from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import check_name
from keyguard.domain.secret import Secret
from keyguard.errors import (
    AlreadyExists,
    ConfigError,
    KeyFormatError,
    KeyNotFound,
    StorageError,
    Unauthenticated,
)
from keyguard.vault.core import VaultCore

log = logging.getLogger("keyguard.vault")

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
        self,
        name: str,
        scope: AdminScope,
        *,
        expires_at: datetime | None,
        actor: str,
        source: str,
    ) -> tuple[AdminToken, Secret]:
        check_name("admin token name", name)
        core = self._core
        now = core.now()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ConfigError("an admin token's expiry must be timezone-aware")
            if expires_at <= now:
                raise ConfigError("an admin token's expiry must be in the future")
        details = {"name": name, "scope": AdminScope(scope).value}
        if expires_at is not None:
            details["expires_at"] = expires_at.isoformat(timespec="seconds")
        for attempt in range(_ID_ATTEMPTS):
            token_id, token = generate_admin_token()
            parts = parse_admin_token(token)
            record = AdminToken(
                token_id,
                name,
                AdminScope(scope),
                now,
                created_by=actor,
                expires_at=expires_at,
            )
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
                            details=details,
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

    def authenticate(
        self, token: str, *, now: datetime | None = None, record_use: bool = False
    ) -> AdminToken:
        """The token's record when it is valid, not revoked and not expired at ``now`` (the
        vault's clock by default); :class:`Unauthenticated` (never echoing the token) otherwise.
        With ``record_use``, a success records ``last_used_at`` when it is due."""
        core = self._core
        now = core.now() if now is None else now
        try:
            parts = parse_admin_token(token)
        except KeyFormatError:
            raise Unauthenticated(INVALID, code="invalid_admin_token") from None
        found = core.store.get_admin_token(parts.token_id)
        digest = admin_token_digest(core.server_key, parts.secret)
        stored = found[1] if found is not None else bytes(len(digest))
        if not hmac.compare_digest(stored, digest) or found is None:
            raise Unauthenticated(INVALID, code="invalid_admin_token")
        record = found[0]
        check_admin_token_state(record, now=now)
        if record_use and last_used_due(record, now):
            record = self._record_use(record, now)
        return record

    def _record_use(self, record: AdminToken, now: datetime) -> AdminToken:
        """Write ``last_used_at`` (best effort: a store hiccup here must not refuse a valid
        token; the next use retries)."""
        try:
            written = self._core.store.touch_admin_token(
                record.token_id, now, unless_after=now - LAST_USED_INTERVAL
            )
        except StorageError as exc:
            log.warning(
                "could not record the use of admin token %s: %s",
                record.token_id,
                type(exc).__name__,
            )
            return record
        # not written: another worker recorded a use within the interval a moment ago
        return replace(record, last_used_at=now) if written else record


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
        expires_at: datetime | None = None,
        actor: str = "system",
        source: str | None = None,
    ) -> tuple[AdminToken, Secret]:
        """A new admin token; the token (a :class:`Secret`) is returned once, never stored.
        ``expires_at`` (aware, in the future) ends it; ``None``: it lasts until revoked."""
        return AdminTokenService(self._core).create(
            name, AdminScope(scope), expires_at=expires_at, actor=actor, source=self._src(source)
        )

    def list_admin_tokens(self) -> list[AdminToken]:
        """Every admin token's record (revoked ones too), oldest first."""
        return AdminTokenService(self._core).list()

    def revoke_admin_token(
        self, token_id: str, *, actor: str = "system", source: str | None = None
    ) -> AdminToken:
        """Revoke an admin token at once and for good (idempotent)."""
        return AdminTokenService(self._core).revoke(token_id, actor=actor, source=self._src(source))

    def authenticate_admin(
        self, token: str, *, now: datetime | None = None, record_use: bool = False
    ) -> AdminToken:
        """Verify an admin token (one store read); :class:`Unauthenticated` when it is
        malformed, unknown, revoked or expired at ``now`` (default: the vault's clock).

        ``record_use=True`` (the admin API's authentication) also records ``last_used_at``,
        with at most one write per token per minute. Lookups that are not a use of the token
        (e.g. the scanner recognising a leaked one) leave it unset.
        """
        return AdminTokenService(self._core).authenticate(token, now=now, record_use=record_use)
