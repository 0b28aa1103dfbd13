"""Vault maintenance: KEK rotation, re-wrapping, master key rotation, whole-vault check.

Functions over an unlocked :class:`~keyguard.vault.core.VaultCore`; the :class:`Vault` facade
exposes them as methods. Each change is one transaction with its audit record.
"""

from __future__ import annotations

from keyguard.crypto.master import (
    MasterKey,
    ScryptParams,
    make_check,
    new_kek,
    opens,
    unwrap_kek,
    wrap_kek,
)
from keyguard.domain.audit import AuditEvent
from keyguard.errors import DecryptionError, VaultError, VaultLocked
from keyguard.storage.ports import KekRecord
from keyguard.vault.admin_keys import AdminKeyService
from keyguard.vault.core import INTERNAL_KEYS, VaultCore, internal_context, upstream_context


def _require_current_master(core: VaultCore) -> None:
    """Inside a write transaction: refuse to wrap anything under a master key that another
    process has rotated away (a KEK wrapped under it would open for no key: the vault bricked)."""
    if not opens(core.master, core.vault_id, core.store.get_meta("check") or b""):
        raise VaultLocked(
            "the vault's master key was rotated by another process:"
            " open the vault again with the current master key"
        )


def add_kek(core: VaultCore, *, actor: str, source: str) -> int:
    """Add a new KEK (it seals from now on) and return its id."""
    with core.store.transaction():
        _require_current_master(core)
        kek_id = max([r.kek_id for r in core.store.list_keks()] + [*core.keyring.ids]) + 1
        kek = new_kek()
        core.store.add_kek(
            KekRecord(kek_id, wrap_kek(core.master, core.vault_id, kek_id, kek), core.now())
        )
        keyring = core.keyring.with_kek(kek_id, kek)
        core.audit.append(AuditEvent("vault.rotate_kek", actor, str(kek_id), source))
    core.keyring = keyring
    return kek_id


def rewrap(core: VaultCore, *, actor: str, source: str) -> int:
    """Re-wrap every sealed record's data key under the newest KEK, in one transaction.

    Only data keys are unwrapped and wrapped again; no secret value is decrypted.
    Returns how many records changed.
    """
    store = core.store
    changed = 0
    with store.transaction():
        for row in store.iter_sealed_upstreams():
            ctx = upstream_context(core.vault_id, row.upstream, row.version)
            new = core.keyring.rewrap(ctx, row.sealed)
            if new != row.sealed:
                store.replace_sealed_upstream(row.upstream, row.version, new)
                changed += 1
        for name in INTERNAL_KEYS:
            sealed = store.get_meta(name)
            if sealed is None:
                continue
            new = core.keyring.rewrap(internal_context(core.vault_id, name), sealed)
            if new != sealed:
                store.set_meta(name, new)
                changed += 1
        changed += AdminKeyService(core).rewrap()
        core.audit.append(
            AuditEvent(
                "vault.rewrap",
                actor,
                str(core.keyring.current_id),
                source,
                details={"records": changed},
            )
        )
    return changed


def rotate_master_key(
    core: VaultCore, new_master: MasterKey, *, kdf: ScryptParams | None, actor: str, source: str
) -> None:
    """Re-wrap the KEK records and the check value under ``new_master``, atomically."""
    store = core.store
    with store.transaction():
        _require_current_master(core)
        for record in store.list_keks():
            kek = unwrap_kek(core.master, core.vault_id, record.kek_id, record.wrapped)
            store.replace_kek(
                record.kek_id, wrap_kek(new_master, core.vault_id, record.kek_id, kek)
            )
        store.set_meta("check", make_check(new_master, core.vault_id))
        store.set_meta("kdf", kdf.to_json() if kdf is not None else b"")
        core.audit.append(
            AuditEvent(
                "vault.rotate_master",
                actor,
                core.vault_id,
                source,
                details={"kdf": kdf is not None},
            )
        )
    core.master = new_master


def check(core: VaultCore) -> int:
    """Open every sealed upstream version and internal key, verify the audit chain."""
    store = core.store
    opened = 0
    for row in store.iter_sealed_upstreams():
        try:
            core.keyring.unseal(
                upstream_context(core.vault_id, row.upstream, row.version), row.sealed
            )
        except DecryptionError:
            raise DecryptionError(
                f"upstream credential {row.upstream!r} version {row.version} does not decrypt"
            ) from None
        opened += 1
    for name in INTERNAL_KEYS:
        core.keyring.unseal(internal_context(core.vault_id, name), store.get_meta(name) or b"")
        opened += 1
    report = core.audit.verify()
    if not report.ok:
        raise VaultError(str(report))
    return opened
