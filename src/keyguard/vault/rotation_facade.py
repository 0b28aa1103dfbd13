"""The rotation part of the :class:`~keyguard.vault.Vault` facade (mixed into ``Vault``).

Virtual-key rotation with a grace window, the admin keys of upstream credentials, and the
rotation bookkeeping the upstream rotation service (:mod:`keyguard.rotation`) keeps in the store.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import VirtualKey
from keyguard.domain.rotation import AdminKeyRecord
from keyguard.domain.secret import Secret
from keyguard.vault.admin_keys import AdminKeyService
from keyguard.vault.core import VaultCore
from keyguard.vault.key_rotation import DEFAULT_GRACE, key_rotated_at, rotate_virtual_key


class RotationFacade:
    """Methods of :class:`~keyguard.vault.Vault` about rotation."""

    _core: VaultCore

    def _src(self, source: str | None) -> str:
        raise NotImplementedError

    def _changed(self) -> None:
        raise NotImplementedError

    def now(self) -> datetime:
        """The vault clock's current time (aware UTC)."""
        return self._core.now()

    # -- virtual keys ---------------------------------------------------------------------

    def rotate_key(
        self,
        key_id: str,
        *,
        grace: timedelta = DEFAULT_GRACE,
        actor: str = "system",
        source: str | None = None,
    ) -> tuple[VirtualKey, Secret]:
        """A new token for the same key id; the old one works until ``grace`` has passed.

        Scope, limits, budget and audit history stay with the key id. The token is returned
        once and never stored.
        """
        result = rotate_virtual_key(
            self._core, key_id, grace=grace, actor=actor, source=self._src(source)
        )
        self._changed()
        return result

    def key_rotated_at(self) -> dict[str, datetime]:
        """key id -> when its newest secret was issued (creation or last rotation)."""
        return key_rotated_at(self._core)

    # -- admin keys -----------------------------------------------------------------------

    def set_admin_key(
        self,
        upstream: str,
        secret: Secret,
        *,
        project_id: str,
        validate_key: bool = True,
        actor: str = "system",
        source: str | None = None,
    ) -> AdminKeyRecord:
        """Store (or replace) the OpenAI admin key used to rotate ``upstream``'s keys."""
        return AdminKeyService(self._core).set(
            upstream,
            secret,
            project_id=project_id,
            validate_key=validate_key,
            actor=actor,
            source=self._src(source),
        )

    def admin_key_record(self, upstream: str) -> AdminKeyRecord | None:
        """Which project the admin key of ``upstream`` acts on (never the key)."""
        return AdminKeyService(self._core).get(upstream)

    def reveal_admin_key(
        self, upstream: str, *, purpose: str, actor: str = "system", source: str | None = None
    ) -> tuple[AdminKeyRecord, Secret]:
        """Decrypt the admin key for one Admin API use (never cached; audited with ``purpose``)."""
        return AdminKeyService(self._core).reveal(
            upstream, purpose=purpose, actor=actor, source=self._src(source)
        )

    def remove_admin_key(
        self, upstream: str, *, actor: str = "system", source: str | None = None
    ) -> bool:
        """Forget the admin key of ``upstream`` (revoke it in the OpenAI dashboard too)."""
        return AdminKeyService(self._core).remove(upstream, actor=actor, source=self._src(source))

    # -- alerts ---------------------------------------------------------------------------

    def record_upstream_fallback(
        self, upstream: str, failed_version: int, used_version: int
    ) -> None:
        """Audit an alert: the upstream refused CURRENT (401) and the gateway used PREVIOUS."""
        self._core.audit.append(
            AuditEvent(
                "upstream.fallback",
                "gateway",
                upstream,
                self._src(None),
                outcome="alert",
                details={
                    "priority": "high",
                    "refused_version": failed_version,
                    "used_version": used_version,
                },
            )
        )
