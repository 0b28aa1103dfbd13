"""What the gateway needs from the vault, as Protocols (the real ``keyguard.vault`` fits them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import UpstreamCredential, UpstreamVersion, VirtualKey
from keyguard.domain.secret import Secret


class Authenticator(Protocol):
    """Turns a presented virtual key into its record (O(1), constant-time compare)."""

    def authenticate(self, token: str, now: datetime) -> VirtualKey:
        """The key's record; raises :class:`~keyguard.errors.Unauthenticated` otherwise."""
        ...


class UpstreamProvider(Protocol):
    """Upstream credentials: where to send requests and the key to send."""

    def get_upstream(self, name: str) -> UpstreamCredential: ...

    def upstream_secret(
        self, name: str, label: str = "CURRENT"
    ) -> tuple[UpstreamVersion, Secret]: ...


class AuditSink(Protocol):
    """Durable audit log; one call writes a batch in one transaction."""

    def append_many(self, events: Sequence[AuditEvent]) -> object: ...


class VaultLike(UpstreamProvider, AuditSink, Protocol):
    """The vault facade as the gateway uses it."""

    def authenticator(self) -> Authenticator: ...
