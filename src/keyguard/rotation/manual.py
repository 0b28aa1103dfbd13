"""Rotation by hand and in an emergency.

* :func:`rotate_manually` — the user brings the new key (no admin key configured): test it with
  a cheap call, store it as CURRENT (the old one becomes PREVIOUS, the gateway's fallback), and
  remind the user to revoke the old key in the OpenAI dashboard.
* :func:`emergency_revoke` — the CURRENT key leaked: mark it compromised, promote a fresh key in
  one step (created through the Admin API, or brought by the user), drop the leaked version from
  every label (no fallback to it), delete its service account when keyguard created it, audit
  with high priority.
* :func:`cut_off_leaked` — a compromised version that is no longer in use (its emergency
  revoke switched keys but could not delete its service account; a compromised PREVIOUS
  outside a rotation) still works at OpenAI: delete its service account.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from keyguard.domain.audit import AuditEvent
from keyguard.domain.records import Label, UpstreamVersion
from keyguard.domain.rotation import ServiceAccountLink
from keyguard.domain.secret import Secret
from keyguard.errors import KeyNotFound, UpstreamError, UpstreamUnavailable, VaultError
from keyguard.rotation.admin_api import AdminApi, check_key
from keyguard.rotation.upstream import Connect, UpstreamRotator, check_project
from keyguard.vault.vault import Vault


@dataclass(frozen=True)
class ManualRotation:
    """Result of :func:`rotate_manually`."""

    new: UpstreamVersion
    old_version: int | None
    reminder: str


def rotate_manually(
    vault: Vault,
    name: str,
    new_key: Secret,
    connect: Connect,
    *,
    test: bool = True,
    validate_key: bool = True,
    actor: str = "system",
    source: str = "cli",
) -> ManualRotation:
    """Test ``new_key``, make it CURRENT (the old CURRENT becomes PREVIOUS)."""
    cred = vault.get_upstream(name)
    for v in cred.versions:
        if v.fingerprint == new_key.fingerprint:
            raise VaultError(f"this key is already version {v.version} of {name!r}")
    if test:
        check_key(connect(cred), new_key)
    old = cred.version_with(Label.CURRENT)
    new = vault.add_upstream_version(
        name, new_key, label=Label.CURRENT, validate_key=validate_key, actor=actor, source=source
    )
    vault.append(
        AuditEvent(
            "upstream.rotate.manual",
            actor,
            name,
            source,
            details={
                "new_version": new.version,
                "old_version": old.version if old else None,
                "tested": test,
            },
        )
    )
    reminder = (
        f"Now revoke the old key (version {old.version}, {old.fingerprint}) in the OpenAI"
        " dashboard (https://platform.openai.com/api-keys) once your traffic has moved;"
        " keyguard keeps it as PREVIOUS (the gateway's fallback) until the next rotation."
        if old
        else "No previous key to revoke."
    )
    return ManualRotation(new, old.version if old else None, reminder)


@dataclass(frozen=True)
class EmergencyResult:
    """Result of :func:`emergency_revoke`."""

    revoked_version: int
    new_version: int
    account_deleted: bool
    reminder: str


def emergency_revoke(
    vault: Vault,
    name: str,
    connect: Connect,
    *,
    new_key: Secret | None = None,
    actor: str = "system",
    source: str = "cli",
) -> EmergencyResult:
    """Replace the leaked CURRENT key at once and cut it off everywhere keyguard can.

    Runs under the rotation lease of ``name``; a rotation that has not switched yet is aborted
    first (its PENDING key would otherwise replace the fresh one later)."""
    rotator = UpstreamRotator(vault, connect, actor=actor, source=source)
    with rotator.locked(name):
        if vault.admin_key_record(name) is not None:
            rotator.abort_unswitched(name)
        return _emergency(vault, name, connect, new_key, actor, source)


def _emergency(
    vault: Vault, name: str, connect: Connect, new_key: Secret | None, actor: str, source: str
) -> EmergencyResult:
    store = vault.store
    cred = vault.get_upstream(name)
    leaked = cred.version_with(Label.CURRENT)
    if leaked is None:
        raise KeyNotFound(f"upstream credential {name!r} has no CURRENT version")
    # recorded before anything else (a first mark, e.g. the scanner's, is kept): should the
    # replacement fail, the version still shows as compromised and stays due
    vault.mark_upstream_compromised(
        name, leaked.version, "emergency revoke", actor=actor, source=source
    )
    admin = vault.admin_key_record(name)
    api: AdminApi | None = None
    link = None
    if new_key is None:
        if admin is None:
            raise KeyNotFound(
                f"{name!r} has no admin key: give the replacement key (--from-env/--stdin)"
            )
        check_project(cred, admin.project_id)
        record, admin_secret = vault.reveal_admin_key(
            name, purpose="emergency revoke", actor=actor, source=source
        )
        api = AdminApi(connect(cred), admin_secret, record.project_id)
        created = api.create_service_account(f"keyguard-{name}-emergency-{uuid.uuid4().hex[:8]}")
        new_key = created.api_key
        link = created
    try:
        check_key(connect(cred), new_key)
        with store.transaction():
            new = vault.add_upstream_version(
                name, new_key, label=Label.CURRENT, actor=actor, source=source
            )
            store.set_upstream_labels(name, {leaked.version: None})  # no fallback to a leak
            if link is not None and admin is not None:
                store.add_service_account(
                    ServiceAccountLink(
                        name,
                        new.version,
                        admin.project_id,
                        link.account.id,
                        link.api_key_id,
                        vault.now(),
                    )
                )
    except BaseException:
        if api is not None and link is not None:
            api.delete_service_account(link.account.id)
        raise
    vault.clear_caches()
    deleted = False
    old_link = next(
        (
            s
            for s in store.list_service_accounts(name)
            if s.version == leaked.version and s.deleted_at is None
        ),
        None,
    )
    if old_link is not None and admin is not None:
        if api is None:
            record, admin_secret = vault.reveal_admin_key(
                name, purpose="emergency revoke", actor=actor, source=source
            )
            api = AdminApi(connect(cred), admin_secret, record.project_id)
        try:
            api.delete_service_account(old_link.account_id)
        except UpstreamError as exc:
            raise UpstreamUnavailable(
                f"version {new.version} of {name!r} is CURRENT, but the service account of the"
                f" leaked version {leaked.version} could not be deleted ({exc}): the leaked key"
                " still works at OpenAI until 'keyguard rotate --due' (or the serve loop)"
                " deletes it"
            ) from None
        store.mark_service_account_deleted(name, old_link.account_id, vault.now())
        deleted = True
    vault.append(
        AuditEvent(
            "upstream.emergency_revoke",
            actor,
            name,
            source,
            outcome="ok",
            details={
                "priority": "high",
                "revoked_version": leaked.version,
                "revoked_fingerprint": leaked.fingerprint,
                "new_version": new.version,
                "service_account_deleted": deleted,
            },
        )
    )
    reminder = (
        "The leaked key's service account was deleted: the key no longer works."
        if deleted
        else f"keyguard did not create version {leaked.version}: revoke it NOW in the OpenAI"
        " dashboard (https://platform.openai.com/api-keys)."
    )
    return EmergencyResult(leaked.version, new.version, deleted, reminder)


def leaked_links(vault: Vault, name: str) -> list[ServiceAccountLink]:
    """The live service accounts of ``name``'s compromised versions that are not in use
    (no label, or PREVIOUS) and not the old key a rotation in flight retires itself."""
    store = vault.store
    r = store.get_rotation(name)
    retiring = r.old_version if r is not None and not r.state.terminal else None
    leaked = {
        v.version
        for v in vault.get_upstream(name).versions
        if v.compromised and v.label in (None, Label.PREVIOUS) and v.version != retiring
    }
    return [
        s for s in store.list_service_accounts(name) if s.version in leaked and s.deleted_at is None
    ]


def cut_off_leaked(
    vault: Vault, name: str, connect: Connect, *, actor: str = "system", source: str = "rotation"
) -> list[int]:
    """Delete the service accounts of :func:`leaked_links` (call under the rotation lease);
    returns the versions cut off. A PREVIOUS version among them loses its label."""
    links = leaked_links(vault, name)
    if not links:
        return []
    store = vault.store
    record, admin_secret = vault.reveal_admin_key(
        name, purpose="leaked key cut-off", actor=actor, source=source
    )
    cred = vault.get_upstream(name)
    done = []
    for link in links:
        api = AdminApi(connect(cred), admin_secret, link.project_id or record.project_id)
        existed = api.delete_service_account(link.account_id)
        with store.transaction():
            store.mark_service_account_deleted(name, link.account_id, vault.now())
            version = vault.get_upstream(name).version_number(link.version)
            if version is not None and version.label is Label.PREVIOUS:
                store.set_upstream_labels(name, {link.version: None})
            vault.append(
                AuditEvent(
                    "upstream.leaked_account_deleted",
                    actor,
                    name,
                    source,
                    details={
                        "priority": "high",
                        "version": link.version,
                        "service_account": link.account_id,
                        "existed": existed,
                    },
                )
            )
        done.append(link.version)
    vault.clear_caches()
    return done
