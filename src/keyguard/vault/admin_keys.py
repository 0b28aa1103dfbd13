"""OpenAI admin keys: one per upstream credential, the vault's most protected secret.

An admin key can create and delete service accounts, so it is kept apart from everything else:
its own table, sealed under its own purpose (``openai-admin-key``: a sealed admin key can never
be opened as an upstream key or the other way round), never cached, revealed only to the
rotation code with an audit record naming why, and never used for model traffic (an admin key
is refused as an upstream key version, and an upstream key is refused as an admin key).
"""

from __future__ import annotations

from keyguard.crypto.envelope import SealContext
from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import openai_key_kind
from keyguard.domain.rotation import AdminKeyRecord
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, KeyNotFound
from keyguard.storage.ports import VaultStore
from keyguard.vault.core import VaultCore

ADMIN_PURPOSE = "openai-admin-key"


def admin_context(vault_id: str, upstream: str) -> SealContext:
    """The sealing context of an upstream's admin key."""
    return SealContext(vault_id=vault_id, name=upstream, version=1, purpose=ADMIN_PURPOSE)


def check_admin_key(
    store: VaultStore, secret: Secret, *, project_id: str, validate_key: bool = True
) -> None:
    """Refuse what cannot be an admin key (before it is sent anywhere): a malformed project
    id, a key without the ``sk-admin-`` shape, or a key the vault holds as an upstream key."""
    if not project_id or not project_id.isprintable() or len(project_id) > 128:
        raise ConfigError("project id must be 1-128 printable characters")
    if validate_key and openai_key_kind(secret.reveal()) != "admin":
        raise ConfigError("an admin key starts with 'sk-admin-': this is not an admin key")
    if store.find_upstream_versions(secret.fingerprint):
        raise ConfigError("this key is stored as an upstream key: an admin key must differ")


def refuse_as_upstream_key(store: VaultStore, secret: Secret) -> None:
    """An admin key must never carry model traffic: refuse it as an upstream key version."""
    if secret.reveal().startswith("sk-admin-") or any(
        a.fingerprint == secret.fingerprint for a in store.list_admin_keys()
    ):
        raise ConfigError("this is an OpenAI admin key: it is never used as an upstream key")


class AdminKeyService:
    """Admin keys of one unlocked vault."""

    def __init__(self, core: VaultCore) -> None:
        self._core = core

    def set(
        self,
        upstream: str,
        secret: Secret,
        *,
        project_id: str,
        validate_key: bool,
        actor: str,
        source: str,
    ) -> AdminKeyRecord:
        core = self._core
        store = core.store
        check_admin_key(store, secret, project_id=project_id, validate_key=validate_key)
        record = AdminKeyRecord(upstream, project_id, secret.fingerprint, core.now())
        sealed = core.keyring.seal(
            admin_context(core.vault_id, upstream), secret.reveal().encode("utf-8")
        )
        with store.transaction():
            if store.get_upstream(upstream) is None:
                raise KeyNotFound(f"no upstream credential {upstream!r}")
            replaced = store.get_admin_key(upstream) is not None
            store.put_admin_key(record, sealed)
            core.audit.append(
                AuditEvent(
                    "admin_key.set",
                    actor,
                    upstream,
                    source,
                    details={
                        "project_id": project_id,
                        "fingerprint": secret.fingerprint,
                        "replaced": replaced,
                    },
                )
            )
        return record

    def get(self, upstream: str) -> AdminKeyRecord | None:
        found = self._core.store.get_admin_key(upstream)
        return None if found is None else found[0]

    def reveal(
        self, upstream: str, *, purpose: str, actor: str, source: str
    ) -> tuple[AdminKeyRecord, Secret]:
        """Decrypt the admin key for one use (never cached); audited with ``purpose``."""
        core = self._core
        found = core.store.get_admin_key(upstream)
        if found is None:
            raise KeyNotFound(
                f"upstream credential {upstream!r} has no admin key:"
                f" set one with 'keyguard upstream admin-key set {upstream}'"
            )
        record, sealed = found
        plain = core.keyring.unseal(admin_context(core.vault_id, upstream), sealed)
        core.audit.append(
            AuditEvent(
                "admin_key.use",
                actor,
                upstream,
                source,
                details={"purpose": purpose, "fingerprint": record.fingerprint},
            )
        )
        return record, Secret(plain.decode("utf-8"), name=f"admin key {upstream}")

    def remove(self, upstream: str, *, actor: str, source: str) -> bool:
        core = self._core
        with core.store.transaction():
            removed = core.store.delete_admin_key(upstream)
            if removed:
                core.audit.append(AuditEvent("admin_key.remove", actor, upstream, source))
        return removed

    def rewrap(self) -> int:
        """Re-wrap every admin key's data key under the newest KEK; returns how many changed."""
        core = self._core
        store = core.store
        changed = 0
        with store.transaction():
            for record in store.list_admin_keys():
                found = store.get_admin_key(record.upstream)
                if found is None:
                    continue
                new = core.keyring.rewrap(admin_context(core.vault_id, record.upstream), found[1])
                if new != found[1]:
                    store.put_admin_key(found[0], new)
                    changed += 1
        return changed
