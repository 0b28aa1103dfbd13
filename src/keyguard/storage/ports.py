"""Storage ports: what the vault needs from a backend, as ``typing.Protocol`` classes.

Backends (SQLite and PostgreSQL, one set of queries over :mod:`keyguard.storage.sqlbase`)
implement :class:`VaultStore` and pass the shared contract suite (``tests/vault/contract.py``).
Rules every backend follows:

* Each method is atomic. :meth:`Transactional.transaction` groups several calls into one atomic
  write (nested calls join the outer transaction); an exception inside rolls everything back.
* Driver errors are wrapped: :class:`StorageUnavailable` (cannot open/reach, busy),
  :class:`ConcurrentUpdate` (a compare-and-set lost a race), :class:`StorageError` otherwise;
  ``raise ... from exc``. Domain conditions raise :class:`AlreadyExists` / :class:`KeyNotFound`.
* :meth:`Transactional.generation` is a counter bumped by every write to KEKs, metadata,
  upstreams or virtual keys (not by audit appends or ``last_used_at`` updates), so caches in
  other processes detect changes with one cheap query.
* At most one version per upstream holds each label; revocation is permanent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from keyguard.domain.admin_tokens import AdminToken
from keyguard.domain.audit import AuditHead, AuditRecord, AuditRow
from keyguard.domain.records import (
    KeySecretHash,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.domain.rotation import (
    AdminKeyRecord,
    Lease,
    RotationState,
    ServiceAccountLink,
    UpstreamRotation,
)


@dataclass(frozen=True)
class KekRecord:
    """A key-encryption key, wrapped by the master key."""

    kek_id: int
    wrapped: bytes = field(repr=False)
    created_at: datetime


@dataclass(frozen=True)
class SealedUpstream:
    """The sealed value of one upstream key version."""

    upstream: str
    version: int
    sealed: bytes = field(repr=False)


@dataclass(frozen=True)
class PendingAudit:
    """An event recorded while the vault was locked (no audit key): folded in at next unlock."""

    time: datetime
    action: str
    actor: str
    source: str
    details: Mapping[str, str]


class Transactional(Protocol):
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes into one atomic unit (re-entrant)."""

    def generation(self) -> int:
        """The change counter (see module docstring)."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


class MetaStore(Protocol):
    def get_meta(self, name: str) -> bytes | None: ...

    def set_meta(self, name: str, value: bytes) -> None: ...

    def list_keks(self) -> list[KekRecord]: ...

    def add_kek(self, kek: KekRecord) -> None:
        """Insert a KEK record; :class:`AlreadyExists` when the id is taken."""

    def replace_kek(self, kek_id: int, wrapped: bytes) -> None:
        """Replace a KEK's wrapped form (master key rotation)."""


class UpstreamStore(Protocol):
    def add_upstream(self, cred: UpstreamCredential) -> None:
        """Insert a credential (its ``versions`` are ignored); :class:`AlreadyExists`."""

    def get_upstream(self, name: str) -> UpstreamCredential | None:
        """The credential with its versions (oldest first), or ``None``."""

    def list_upstreams(self) -> list[UpstreamCredential]: ...

    def delete_upstream(self, name: str) -> bool:
        """Delete a credential and all its versions; ``False`` when there was none."""

    def add_upstream_version(self, version: UpstreamVersion, sealed: bytes) -> None:
        """Insert a version (its label, if any, must be free); sets ``last_rotated_at``."""

    def set_upstream_labels(self, name: str, labels: Mapping[int, Label | None]) -> None:
        """Set several versions' labels at once, atomically; :class:`KeyNotFound` for an unknown
        version. A label given to one version is taken from any other version holding it."""

    def get_sealed_upstream(self, name: str, version: int) -> bytes:
        """Sealed value of one version; :class:`KeyNotFound`."""

    def iter_sealed_upstreams(self) -> Iterator[SealedUpstream]: ...

    def replace_sealed_upstream(self, name: str, version: int, sealed: bytes) -> None: ...

    def find_upstream_versions(self, fingerprint: str) -> list[UpstreamVersion]: ...

    def mark_upstream_compromised(
        self, name: str, version: int, at: datetime, reason: str, source: str
    ) -> UpstreamVersion:
        """Mark a version compromised (idempotent: a marked version keeps its first time,
        reason and source) and return it as stored; :class:`KeyNotFound` for an unknown
        version. Bumps the generation when it changes a row."""


class VirtualKeyStore(Protocol):
    def add_virtual_key(self, key: VirtualKey, secret: KeySecretHash) -> None:
        """Insert a key with its first secret hash; :class:`AlreadyExists` for a taken id."""

    def get_virtual_key(self, key_id: str) -> VirtualKey | None: ...

    def list_virtual_keys(self) -> list[VirtualKey]: ...

    def revoke_virtual_key(self, key_id: str, at: datetime) -> VirtualKey:
        """Revoke (idempotent: a revoked key keeps its first ``revoked_at``); KeyNotFound."""

    def touch_virtual_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Record ``last_used_at`` (does not bump the generation)."""

    def add_key_secret(self, secret: KeySecretHash) -> None: ...

    def set_key_secret_valid_until(self, key_id: str, digest: bytes, at: datetime) -> None: ...

    def list_key_secrets(self, key_id: str | None = None) -> list[KeySecretHash]: ...


class AuditStore(Protocol):
    def audit_head(self) -> AuditHead | None: ...

    def append_audit(self, rows: Sequence[AuditRow], head: AuditHead) -> None:
        """Insert records (as rows: :meth:`AuditRecord.row`) and move the head, atomically;
        :class:`ConcurrentUpdate` when a seq is taken (call inside
        :meth:`Transactional.transaction` after reading the head)."""

    def list_audit(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]: ...

    def add_pending_audit(self, event: PendingAudit) -> None: ...

    def take_pending_audit(self) -> list[PendingAudit]:
        """Return and delete every pending event."""


class RotationStore(Protocol):
    """Rotation state, leases, admin keys and service-account links (none bump the generation).

    Rules: :meth:`save_rotation` is a compare-and-set on ``(rotation_id, state)`` of the row for
    that upstream (``expect=None``: there must be no row, or only a terminal one) and raises
    :class:`ConcurrentUpdate` when it loses. :meth:`acquire_lease` succeeds when the lease is
    free, expired at ``now``, or already held by ``holder`` (which then extends it).
    """

    def get_rotation(self, upstream: str) -> UpstreamRotation | None: ...

    def list_rotations(self) -> list[UpstreamRotation]: ...

    def save_rotation(
        self, rotation: UpstreamRotation, expect: tuple[str, RotationState] | None
    ) -> None: ...

    def acquire_lease(
        self, name: str, holder: str, now: datetime, expires_at: datetime
    ) -> bool: ...

    def get_lease(self, name: str) -> Lease | None: ...

    def release_lease(self, name: str, holder: str) -> bool: ...

    def put_admin_key(self, record: AdminKeyRecord, sealed: bytes) -> None:
        """Insert or replace the admin key of an upstream; :class:`KeyNotFound` without one."""

    def get_admin_key(self, upstream: str) -> tuple[AdminKeyRecord, bytes] | None: ...

    def list_admin_keys(self) -> list[AdminKeyRecord]: ...

    def delete_admin_key(self, upstream: str) -> bool: ...

    def add_service_account(self, link: ServiceAccountLink) -> None:
        """Record which service account holds a version; :class:`AlreadyExists` when linked."""

    def list_service_accounts(self, upstream: str | None = None) -> list[ServiceAccountLink]: ...

    def mark_service_account_deleted(self, upstream: str, account_id: str, at: datetime) -> None:
        """Set ``deleted_at`` (idempotent: the first time is kept); :class:`KeyNotFound`."""


class AdminTokenStore(Protocol):
    """Admin tokens of the admin API: records plus the keyed hash of each secret (no write
    bumps the generation). Revocation is permanent and idempotent (the first time is kept)."""

    def add_admin_token(self, token: AdminToken, digest: bytes) -> None:
        """Insert a token with its secret's digest; :class:`AlreadyExists` for a taken id."""

    def get_admin_token(self, token_id: str) -> tuple[AdminToken, bytes] | None:
        """The token's record and digest, or ``None``."""

    def list_admin_tokens(self) -> list[AdminToken]:
        """Every token (revoked ones too), oldest first."""

    def revoke_admin_token(self, token_id: str, at: datetime) -> AdminToken:
        """Revoke (idempotent); :class:`KeyNotFound` for an unknown id."""

    def touch_admin_token(self, token_id: str, at: datetime, *, unless_after: datetime) -> bool:
        """Set ``last_used_at`` to ``at`` unless it is already later than ``unless_after``
        (so concurrent workers write it once per interval and it never goes back); True when
        a row changed. Unknown ids change nothing."""


class VaultStore(
    Transactional,
    MetaStore,
    UpstreamStore,
    VirtualKeyStore,
    AuditStore,
    RotationStore,
    AdminTokenStore,
    Protocol,
):
    """Everything the vault needs from a backend."""
