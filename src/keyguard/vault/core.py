"""Creating and unlocking a vault: metadata, KEK records, check value, internal keys.

Metadata names (``meta`` table): ``vault_id``, ``format``, ``created_at``, ``check`` (a fixed
value sealed under the master key), ``kdf`` (scrypt parameters when the master key comes from a
passphrase), ``server_key`` and ``audit_key`` (random 32-byte keys sealed like any secret: the
HMAC key of virtual-key secrets and the audit log key).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from keyguard.crypto.envelope import Keyring, SealContext
from keyguard.crypto.master import MasterKey, ScryptParams, make_check, opens, unwrap_kek
from keyguard.crypto.master import new_kek as _new_kek
from keyguard.crypto.master import wrap_kek as _wrap_kek
from keyguard.domain.audit import AuditEvent
from keyguard.errors import AlreadyExists, DecryptionError, VaultLocked
from keyguard.storage.ports import KekRecord, PendingAudit, VaultStore
from keyguard.vault.audit import AuditLog

Clock = Callable[[], datetime]
VAULT_FORMAT = b"1"
INTERNAL_KEYS = ("server_key", "audit_key")
UPSTREAM_PURPOSE = "upstream-api-key"


def utc_now() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(timezone.utc)


def internal_context(vault_id: str, name: str) -> SealContext:
    return SealContext(vault_id=vault_id, name=name, version=1, purpose="vault-internal-key")


def upstream_context(vault_id: str, name: str, version: int) -> SealContext:
    return SealContext(vault_id=vault_id, name=name, version=version, purpose=UPSTREAM_PURPOSE)


@dataclass
class VaultCore:
    """An unlocked vault's state, shared by the services of :class:`keyguard.vault.Vault`."""

    store: VaultStore
    vault_id: str
    master: MasterKey = field(repr=False)
    keyring: Keyring
    clock: Clock
    server_key: bytes = field(repr=False)
    audit: AuditLog = field(repr=False)

    def load_kek(self, kek_id: int) -> bytes | None:
        """Fetch a KEK added by another process since this vault was opened (``None``: none)."""
        for record in self.store.list_keks():
            if record.kek_id == kek_id:
                try:
                    return unwrap_kek(self.master, self.vault_id, kek_id, record.wrapped)
                except DecryptionError:
                    if not opens(self.master, self.vault_id, self.store.get_meta("check") or b""):
                        raise VaultLocked(
                            "the vault's master key was rotated by another process:"
                            " open the vault again with the new master key"
                        ) from None
                    raise
        return None

    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the vault clock must return timezone-aware datetimes")
        return now


def create_vault(
    store: VaultStore, master: MasterKey, *, kdf: ScryptParams | None, clock: Clock
) -> str:
    """Write a new vault's metadata, first KEK and internal keys in one transaction."""
    with store.transaction():
        existing = store.get_meta("vault_id")
        if existing is not None:
            raise AlreadyExists(f"this store already holds vault {existing.decode()}")
        vault_id = uuid.uuid4().hex
        now = clock()
        kek = _new_kek()
        store.set_meta("vault_id", vault_id.encode())
        store.set_meta("format", VAULT_FORMAT)
        store.set_meta("created_at", now.astimezone(timezone.utc).isoformat().encode())
        store.set_meta("check", make_check(master, vault_id))
        if kdf is not None:
            store.set_meta("kdf", kdf.to_json())
        store.add_kek(KekRecord(1, _wrap_kek(master, vault_id, 1, kek), now))
        keyring = Keyring({1: kek})
        for name in INTERNAL_KEYS:
            sealed = keyring.seal(internal_context(vault_id, name), _new_kek())
            store.set_meta(name, sealed)
    return vault_id


def unlock_vault(
    store: VaultStore, master: MasterKey, *, clock: Clock, actor: str, source: str
) -> VaultCore:
    """Open the vault with ``master``; a wrong key raises :class:`VaultLocked` (and is noted)."""
    raw_id = store.get_meta("vault_id")
    check = store.get_meta("check")
    if raw_id is None or check is None:
        raise VaultLocked("this store holds no vault yet: create one with 'keyguard init'")
    vault_id = raw_id.decode()
    if store.get_meta("format") != VAULT_FORMAT:
        raise VaultLocked(f"vault {vault_id} has a format this keyguard does not know")
    if not opens(master, vault_id, check):
        store.add_pending_audit(
            PendingAudit(clock(), "vault.unlock", actor, source, {"reason": "wrong master key"})
        )
        raise VaultLocked(
            f"the master key does not open this vault (vault {vault_id}): check"
            " KEYGUARD_MASTER_KEY, the key file, the OS keyring entry or the passphrase"
        )
    keks = {r.kek_id: unwrap_kek(master, vault_id, r.kek_id, r.wrapped) for r in store.list_keks()}
    if not keks:
        raise VaultLocked(f"vault {vault_id} has no key-encryption keys: the store is damaged")
    keyring = Keyring(keks)
    opened = {}
    for name in INTERNAL_KEYS:
        sealed = store.get_meta(name)
        if sealed is None:
            raise VaultLocked(f"vault {vault_id} is incomplete: its {name} is missing")
        opened[name] = keyring.unseal(internal_context(vault_id, name), sealed)
    audit = AuditLog(store, opened["audit_key"], clock)
    core = VaultCore(store, vault_id, master, keyring, clock, opened["server_key"], audit)
    core.keyring = Keyring(keks, fetch=core.load_kek)  # picks up KEKs other processes add
    with store.transaction():  # events noted while locked join the chain now
        pending = store.take_pending_audit()
        audit.append_many(
            [
                AuditEvent(
                    action=p.action,
                    actor=p.actor,
                    source=p.source,
                    outcome="failure",
                    details={**p.details, "noted_while_locked": True},
                    time=p.time,
                )
                for p in pending
            ]
        )
    return core


def passphrase_params(store: VaultStore) -> ScryptParams | None:
    """The vault's scrypt parameters when its master key comes from a passphrase."""
    raw = store.get_meta("kdf")
    return ScryptParams.from_json(raw) if raw else None  # b"" = key is not passphrase-derived
