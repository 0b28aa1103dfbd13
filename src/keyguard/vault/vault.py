"""The :class:`Vault` facade: one object the CLI, the library and the gateway talk to."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.domain.audit import AuditEvent, AuditRecord
from keyguard.domain.records import (
    DEFAULT_BASE_URL,
    KeySecretHash,
    KeySpec,
    Label,
    ManagedMatch,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.domain.secret import Secret
from keyguard.storage.ports import VaultStore
from keyguard.vault import maintenance
from keyguard.vault.admin_tokens import AdminTokenFacade
from keyguard.vault.audit import AuditLog
from keyguard.vault.auth import KeyAuthenticator
from keyguard.vault.core import (
    Clock,
    VaultCore,
    create_vault,
    passphrase_params,
    unlock_vault,
    utc_now,
)
from keyguard.vault.keys import VirtualKeyService
from keyguard.vault.rotation_facade import RotationFacade
from keyguard.vault.upstreams import UpstreamService

log = logging.getLogger("keyguard.vault")


class Vault(RotationFacade, AdminTokenFacade):
    """An unlocked vault: upstream credentials, virtual keys, audit log, key rotation.

    Build it with :meth:`create` or :meth:`open`; pass ``clock`` to control time. Methods that
    change state take ``actor`` (who) and ``source`` (``"cli"``, ``"gateway"``, a client IP)
    and write an audit record in the same transaction as the change.
    """

    def __init__(
        self, core: VaultCore, *, source: str = "library", audit_reveals: bool = True
    ) -> None:
        self._core = core
        self._source = source
        self._audit_reveals = audit_reveals
        self._upstreams = UpstreamService(core)
        self._keys = VirtualKeyService(core)
        self._authenticators: weakref.WeakSet[KeyAuthenticator] = weakref.WeakSet()
        self._listeners: list[Callable[[], None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: VaultStore,
        master_key: MasterKey,
        *,
        kdf: ScryptParams | None = None,
        clock: Clock = utc_now,
        actor: str = "system",
        source: str = "library",
    ) -> Vault:
        """Initialise a new vault in an empty store (``kdf``: the passphrase's scrypt params)."""
        vault_id = create_vault(store, master_key, kdf=kdf, clock=clock)
        vault = cls.open(store, master_key, clock=clock, actor=actor, source=source)
        vault.audit.append(
            AuditEvent("vault.create", actor, vault_id, source, details={"kdf": kdf is not None})
        )
        return vault

    @classmethod
    def open(
        cls,
        store: VaultStore,
        master_key: MasterKey,
        *,
        clock: Clock = utc_now,
        actor: str = "system",
        source: str = "library",
        audit_reveals: bool = True,
    ) -> Vault:
        """Unlock an existing vault; :class:`VaultLocked` for a wrong key or no vault.

        ``source`` is the default audit source of this handle's actions. ``audit_reveals=False``
        stops :meth:`upstream_secret` from auditing each reveal (for the gateway, which audits
        every request it forwards instead).
        """
        core = unlock_vault(store, master_key, clock=clock, actor=actor, source=source)
        return cls(core, source=source, audit_reveals=audit_reveals)

    @staticmethod
    def exists(store: VaultStore) -> bool:
        """True when ``store`` already holds a vault."""
        return store.get_meta("vault_id") is not None

    @staticmethod
    def passphrase_params(store: VaultStore) -> ScryptParams | None:
        """scrypt parameters of a passphrase-protected vault (for ``resolve_master_key``)."""
        return passphrase_params(store)

    @property
    def vault_id(self) -> str:
        return self._core.vault_id

    @property
    def store(self) -> VaultStore:
        return self._core.store

    @property
    def audit(self) -> AuditLog:
        """The audit log: ``append``, ``append_many``, ``list``, ``verify``, ``pseudonymise``."""
        return self._core.audit

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append one audit record (same as ``vault.audit.append``)."""
        return self._core.audit.append(event)

    def append_many(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Append a batch of audit records in one transaction (the gateway's audit sink)."""
        return self._core.audit.append_many(events)

    def __repr__(self) -> str:
        return f"Vault(id={self._core.vault_id}, store={self._core.store!r})"

    def close(self) -> None:
        self.clear_caches()
        self._core.store.close()

    def _changed(self) -> None:
        for auth in list(self._authenticators):
            auth.invalidate()
        for listener in list(self._listeners):
            try:
                listener()
            except Exception as exc:  # a listener must never undo a committed write
                log.warning("a vault change listener failed: %s", type(exc).__name__)

    def on_key_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every key write through this vault object (create, revoke,
        rotate), in the writer's thread; returns the function that unsubscribes. Writes by
        other processes are seen through the store's generation counter instead."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _src(self, source: str | None) -> str:
        return source if source is not None else self._source

    # -- upstream credentials -------------------------------------------------------------

    def add_upstream(
        self,
        name: str,
        api_key: Secret,
        *,
        base_url: str = DEFAULT_BASE_URL,
        organization: str | None = None,
        project: str | None = None,
        max_age: timedelta | None = None,
        allow_insecure_loopback: bool = False,
        validate_key: bool = True,
        actor: str = "system",
        source: str | None = None,
    ) -> UpstreamCredential:
        """Store a new credential; ``api_key`` becomes version 1, labelled CURRENT."""
        return self._upstreams.add(
            name,
            api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            max_age=max_age,
            allow_insecure_loopback=allow_insecure_loopback,
            validate_key=validate_key,
            actor=actor,
            source=self._src(source),
        )

    def add_upstream_version(
        self,
        name: str,
        secret: Secret,
        *,
        label: Label | None = Label.PENDING,
        validate_key: bool = True,
        actor: str = "system",
        source: str | None = None,
    ) -> UpstreamVersion:
        """Add a version. The label moves to it; a new CURRENT turns the old one PREVIOUS."""
        return self._upstreams.add_version(
            name,
            secret,
            label=label,
            validate_key=validate_key,
            actor=actor,
            source=self._src(source),
        )

    def set_upstream_label(
        self,
        name: str,
        version: int,
        label: Label,
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> None:
        """Move ``label`` to ``version`` (CURRENT demotes the old CURRENT to PREVIOUS)."""
        self._upstreams.set_label(name, version, label, actor=actor, source=self._src(source))

    def mark_upstream_compromised(
        self,
        name: str,
        version: int,
        reason: str,
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> UpstreamVersion:
        """Mark a version's key compromised (it leaked): for good, idempotent (marking again
        keeps the first time, reason and source), audited as ``upstream.compromised``.

        ``reason`` is kept short and any key-shaped text in it is redacted. A CURRENT or
        PENDING version marked compromised makes the credential due for rotation at once
        (:func:`keyguard.domain.rotation.plan_rotation`). Returns the version as stored.
        """
        return self._upstreams.mark_compromised(
            name, version, reason, actor=actor, source=self._src(source)
        )

    def list_upstreams(self) -> list[UpstreamCredential]:
        return self._upstreams.list()

    def get_upstream(self, name: str) -> UpstreamCredential:
        """The credential with its versions; :class:`KeyNotFound` when there is none."""
        return self._upstreams.get(name)

    def remove_upstream(
        self, name: str, *, force: bool = False, actor: str = "system", source: str | None = None
    ) -> None:
        """Delete a credential and its versions (refused while active keys use it)."""
        self._upstreams.remove(name, force=force, actor=actor, source=self._src(source))

    def upstream_secret(
        self,
        name: str,
        label: Label | str = Label.CURRENT,
        *,
        audit: bool | None = None,
        actor: str = "system",
        source: str | None = None,
    ) -> tuple[UpstreamVersion, Secret]:
        """The key to use, as a :class:`Secret` (decrypted once, cached until the store changes).

        Each call is audited (``upstream.reveal``) unless ``audit`` is false, or ``audit`` is
        ``None`` and the vault was opened with ``audit_reveals=False``.
        """
        return self._upstreams.secret(
            name,
            Label(label),
            audit=self._audit_reveals if audit is None else audit,
            actor=actor,
            source=self._src(source),
        )

    # -- virtual keys ---------------------------------------------------------------------

    def create_key(
        self, spec: KeySpec, *, actor: str = "system", source: str | None = None
    ) -> tuple[VirtualKey, Secret]:
        """Create a virtual key; the token (a :class:`Secret`) is returned once, never stored."""
        result = self._keys.create(spec, actor=actor, source=self._src(source))
        self._changed()
        return result

    def list_keys(self) -> list[VirtualKey]:
        return self._keys.list()

    def get_key(self, key_id: str) -> VirtualKey:
        """The key's record; :class:`KeyNotFound` when there is none."""
        return self._keys.get(key_id)

    def revoke_key(
        self,
        key_id: str,
        *,
        reason: str | None = None,
        actor: str = "system",
        source: str | None = None,
    ) -> VirtualKey:
        """Revoke at once and for good (idempotent)."""
        key = self._keys.revoke(key_id, reason=reason, actor=actor, source=self._src(source))
        self._changed()
        return key

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Record ``last_used_at`` for several keys (batched by the gateway)."""
        self._keys.touch(last_used)

    def authenticator(
        self, *, refresh_interval: float = 0.25, max_staleness: float = 30.0
    ) -> KeyAuthenticator:
        """A fast in-memory verifier of virtual keys (see :class:`KeyAuthenticator`)."""
        auth = KeyAuthenticator(
            self._core.store,
            self._core.server_key,
            refresh_interval=refresh_interval,
            max_staleness=max_staleness,
        )
        self._authenticators.add(auth)
        return auth

    def key_verification_table(self) -> tuple[bytes, list[VirtualKey], list[KeySecretHash]]:
        """``(server key, keys, secret digests)``: what verifying virtual keys needs, for the
        native edge this process feeds over a pipe (docs/edge.md). The server key is the HMAC
        key of the digests; it never leaves the process family."""
        store = self._core.store
        return self._core.server_key, store.list_virtual_keys(), store.list_key_secrets()

    # -- scanner support ------------------------------------------------------------------

    def find_managed(self, fingerprint: str) -> ManagedMatch | None:
        """Which upstream version has this fingerprint (``keyguard.domain.keys.fingerprint``)."""
        for v in self._core.store.find_upstream_versions(fingerprint):
            return ManagedMatch(kind="upstream", name=v.upstream, version=v.version, label=v.label)
        return None

    def match_virtual_key(self, token: str) -> ManagedMatch | None:
        """Which virtual key ``token`` is, when its secret verifies (revoked ones included)."""
        key = self._keys.match(token)
        if key is None:
            return None
        return ManagedMatch(
            kind="virtual_key", name=key.name, key_id=key.key_id, revoked=key.revoked
        )

    # -- key rotation ---------------------------------------------------------------------

    def rotate_kek(
        self, *, rewrap: bool = True, actor: str = "system", source: str | None = None
    ) -> int:
        """Add a new KEK (it seals from now on); by default re-wrap every record under it."""
        kek_id = maintenance.add_kek(self._core, actor=actor, source=self._src(source))
        if rewrap:
            self.rewrap(actor=actor, source=source)
        return kek_id

    def rewrap(self, *, actor: str = "system", source: str | None = None) -> int:
        """Re-wrap every sealed record's data key under the newest KEK, in one transaction.

        Only data keys are unwrapped and wrapped again; no secret value is decrypted.
        Returns how many records changed.
        """
        changed = maintenance.rewrap(self._core, actor=actor, source=self._src(source))
        self._upstreams.clear_cache()
        return changed

    def rotate_master_key(
        self,
        new_master: MasterKey,
        *,
        kdf: ScryptParams | None = None,
        actor: str = "system",
        source: str | None = None,
    ) -> None:
        """Re-wrap the KEK records and the check value under ``new_master``, atomically.

        ``kdf``: the scrypt parameters when ``new_master`` comes from a passphrase (omit it for
        a random key: any stored parameters are dropped). Store the new key (key file, keyring)
        before calling this, so a crash never leaves a vault whose key is lost.
        """
        maintenance.rotate_master_key(
            self._core, new_master, kdf=kdf, actor=actor, source=self._src(source)
        )

    def check(self) -> int:
        """Open every sealed record (upstream key versions, internal keys) and verify the audit
        chain; return how many sealed records opened. Raises :class:`DecryptionError` naming the
        first record that fails, or :class:`VaultError` when the audit log does not verify."""
        return maintenance.check(self._core)

    def clear_caches(self) -> None:
        """Forget decrypted upstream keys held in memory."""
        self._upstreams.clear_cache()
