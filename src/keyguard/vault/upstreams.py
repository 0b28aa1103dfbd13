"""Upstream (OpenAI) credentials: versions with labels, sealed values, a decrypted-value cache.

The value of a version is sealed with :class:`~keyguard.crypto.envelope.Keyring` under a context
naming the vault, the credential, the version and the purpose, and stored next to its
fingerprint (so the scanner can recognise managed keys without decrypting anything).
"""

from __future__ import annotations

import threading
from datetime import timedelta

from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import openai_key_kind
from keyguard.domain.records import (
    DEFAULT_BASE_URL,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    check_base_url,
    check_header_id,
    check_name,
    compromise_reason,
)
from keyguard.domain.secret import Secret
from keyguard.errors import KeyNotFound, VaultError
from keyguard.vault.admin_keys import refuse_as_upstream_key
from keyguard.vault.auth import GenerationWatch
from keyguard.vault.core import VaultCore, upstream_context


class UpstreamService:
    """Upstream credentials of one unlocked vault."""

    def __init__(self, core: VaultCore, *, cache_check_interval: float = 0.25) -> None:
        self._core = core
        self._cache: dict[tuple[str, Label], tuple[UpstreamVersion, Secret]] = {}
        self._lock = threading.Lock()
        self._watch = GenerationWatch(core.store, cache_check_interval)

    def clear_cache(self) -> None:
        """Forget every decrypted value (the next use decrypts again)."""
        with self._lock:
            self._cache.clear()
        self._watch.expire()

    def _audit(self, action: str, subject: str, actor: str, source: str, **details: object) -> None:
        self._core.audit.append(
            AuditEvent(action=action, actor=actor, subject=subject, source=source, details=details)
        )

    def add(
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
        actor: str,
        source: str,
    ) -> UpstreamCredential:
        check_name("upstream name", name)
        base_url = check_base_url(base_url, allow_insecure_loopback=allow_insecure_loopback)
        if validate_key:
            openai_key_kind(api_key.reveal())  # KeyFormatError names no key material
        now = self._core.now()
        cred = UpstreamCredential(
            name=name,
            base_url=base_url,
            organization=check_header_id("organization", organization),
            project=check_header_id("project", project),
            allow_insecure_loopback=allow_insecure_loopback,
            created_at=now,
            max_age=max_age,
        )
        store = self._core.store
        with store.transaction():
            store.add_upstream(cred)
            self._store_version(name, 1, api_key, Label.CURRENT)
            self._audit(
                "upstream.add",
                name,
                actor,
                source,
                base_url=base_url,
                fingerprint=api_key.fingerprint,
            )
        self.clear_cache()
        return self.get(name)

    def _store_version(
        self, name: str, version: int, secret: Secret, label: Label | None
    ) -> UpstreamVersion:
        core = self._core
        refuse_as_upstream_key(core.store, secret)
        sealed = core.keyring.seal(
            upstream_context(core.vault_id, name, version), secret.reveal().encode("utf-8")
        )
        record = UpstreamVersion(name, version, secret.fingerprint, core.now(), label)
        core.store.add_upstream_version(record, sealed)
        return record

    def add_version(
        self,
        name: str,
        secret: Secret,
        *,
        label: Label | None = Label.PENDING,
        validate_key: bool = True,
        actor: str,
        source: str,
    ) -> UpstreamVersion:
        if validate_key:
            openai_key_kind(secret.reveal())
        store = self._core.store
        with store.transaction():
            cred = self.get(name)
            version = max((v.version for v in cred.versions), default=0) + 1
            record = self._store_version(name, version, secret, None)
            if label is not None:
                self._relabel(cred, version, label)
            self._audit(
                "upstream.add_version",
                name,
                actor,
                source,
                version=version,
                label=label.value if label else None,
                fingerprint=secret.fingerprint,
            )
        self.clear_cache()
        return UpstreamVersion(
            record.upstream, version, record.fingerprint, record.created_at, label
        )

    def _relabel(self, cred: UpstreamCredential, version: int, label: Label) -> None:
        """Give ``label`` to ``version``. A new CURRENT moves the old one to PREVIOUS."""
        changes: dict[int, Label | None] = {version: label}
        holder = cred.version_with(label)
        if label is Label.CURRENT and holder is not None and holder.version != version:
            changes[holder.version] = Label.PREVIOUS
        self._core.store.set_upstream_labels(cred.name, changes)

    def set_label(self, name: str, version: int, label: Label, *, actor: str, source: str) -> None:
        with self._core.store.transaction():
            self._relabel(self.get(name), version, label)
            self._audit(
                "upstream.set_label", name, actor, source, version=version, label=label.value
            )
        self.clear_cache()

    def mark_compromised(
        self, name: str, version: int, reason: str, *, actor: str, source: str
    ) -> UpstreamVersion:
        """Mark ``version`` of ``name`` compromised (idempotent: the first mark is kept), with
        an ``upstream.compromised`` audit record (``priority: high``) either way."""
        store = self._core.store
        with store.transaction():
            found = self.get(name).version_number(version)
            if found is None:
                raise KeyNotFound(f"upstream credential {name!r} has no version {version}")
            cleaned = compromise_reason(reason)  # this call's reason, for the audit record
            wanted = found.mark_compromised(self._core.now(), cleaned, source)
            assert wanted.compromised_at is not None
            stored = store.mark_upstream_compromised(
                name,
                version,
                wanted.compromised_at,
                wanted.compromised_reason or "",
                wanted.compromised_source or "",
            )
            self._core.audit.append(
                AuditEvent(
                    action="upstream.compromised",
                    actor=actor,
                    subject=name,
                    source=source,
                    outcome="already_flagged" if found.compromised else "flagged",
                    details={
                        "priority": "high",
                        "version": version,
                        "label": found.label.value if found.label else None,
                        "fingerprint": found.fingerprint,
                        "reason": cleaned,
                        "compromised_at": stored.compromised_at.isoformat()
                        if stored.compromised_at
                        else None,
                    },
                )
            )
        self.clear_cache()
        return stored

    def get(self, name: str) -> UpstreamCredential:
        cred = self._core.store.get_upstream(name)
        if cred is None:
            raise KeyNotFound(f"no upstream credential {name!r}")
        return cred

    def list(self) -> list[UpstreamCredential]:
        return self._core.store.list_upstreams()

    def remove(self, name: str, *, force: bool, actor: str, source: str) -> None:
        store = self._core.store
        with store.transaction():
            self.get(name)
            users = [
                k.key_id for k in store.list_virtual_keys() if k.upstream == name and not k.revoked
            ]
            if users and not force:
                raise VaultError(
                    f"upstream credential {name!r} is used by {len(users)} active virtual keys"
                    f" ({', '.join(users[:5])}); revoke them first or force the removal"
                )
            store.delete_upstream(name)
            self._audit("upstream.remove", name, actor, source, active_keys=len(users))
        self.clear_cache()

    def secret(
        self, name: str, label: Label, *, audit: bool, actor: str, source: str
    ) -> tuple[UpstreamVersion, Secret]:
        """The decrypted value of the version holding ``label`` (cached, checked for changes)."""
        generation = self._watch.poll()
        with self._lock:
            if generation is not None:
                self._cache.clear()
                self._watch.mark(generation)
            hit = self._cache.get((name, label))
        if hit is None:
            hit = self._decrypt(name, label)
            with self._lock:
                self._cache[(name, label)] = hit
        if audit:
            version = hit[0]
            self._audit(
                "upstream.reveal", name, actor, source, version=version.version, label=label.value
            )
        return hit

    def _decrypt(self, name: str, label: Label) -> tuple[UpstreamVersion, Secret]:
        core = self._core
        cred = self.get(name)
        version = cred.version_with(label)
        if version is None:
            raise KeyNotFound(f"upstream credential {name!r} has no {label.value} version")
        sealed = core.store.get_sealed_upstream(name, version.version)
        plain = core.keyring.unseal(upstream_context(core.vault_id, name, version.version), sealed)
        secret = Secret(plain.decode("utf-8"), name=f"upstream {name} v{version.version}")
        return version, secret
