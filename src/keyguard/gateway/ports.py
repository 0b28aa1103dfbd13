"""What the gateway needs from the vault, as Protocols; :class:`keyguard.vault.Vault` fits them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import Label, UpstreamCredential, UpstreamVersion, VirtualKey
from keyguard.domain.secret import Secret


class Authenticator(Protocol):
    """Turns a presented virtual key into its record (O(1), constant-time compare)."""

    def authenticate(self, token: str, now: datetime) -> VirtualKey:
        """The key's record; raises :class:`~keyguard.errors.Unauthenticated` otherwise."""
        ...

    def current(self, key_id: str) -> VirtualKey | None:
        """The live record of ``key_id``; a new object after any change to the key."""
        ...


class UpstreamProvider(Protocol):
    """Upstream credentials: where to send requests and the key to send."""

    def get_upstream(self, name: str) -> UpstreamCredential: ...

    def upstream_secret(
        self, name: str, label: Label = ..., *, audit: bool = ...
    ) -> tuple[UpstreamVersion, Secret]: ...


class UniformAudit(Protocol):
    """Appends records of one action with flat details under fixed keys (one transaction)."""

    def append(
        self, rows: Sequence[tuple[datetime, str, str, str, str, Sequence[object]]]
    ) -> object: ...

    def append_rendered(
        self, rows: Sequence[tuple[str, str, str, str, str, bytes, str]]
    ) -> object: ...


class AuditSink(Protocol):
    """Durable audit log; one call writes a batch in one transaction."""

    def append_many(self, events: Sequence[AuditEvent]) -> object: ...

    def uniform(self, action: str, keys: Sequence[str]) -> UniformAudit:
        """An appender for the gateway's per-request records (``gateway.request``)."""
        ...


class StoreProbe(Protocol):
    """Enough of the store to tell whether it is reachable (readiness)."""

    def generation(self) -> int: ...


class VaultLike(UpstreamProvider, Protocol):
    """The vault facade as the gateway uses it."""

    @property
    def audit(self) -> AuditSink: ...

    @property
    def store(self) -> StoreProbe: ...

    def authenticator(self) -> Authenticator: ...

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None: ...
