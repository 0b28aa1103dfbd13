"""Drift detection: compare what the Admin API lists with what keyguard believes.

Reports service accounts and keys in the project that keyguard did not create, accounts keyguard
believes live that are gone, and accounts keyguard deleted that still exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keyguard.rotation.admin_api import AdminApi, ProjectKey, ServiceAccount
from keyguard.rotation.upstream import Connect
from keyguard.vault.vault import Vault


@dataclass(frozen=True)
class DriftReport:
    """What :func:`reconcile` found for one upstream credential's project."""

    upstream: str
    project_id: str
    unknown_accounts: list[ServiceAccount] = field(default_factory=list)
    unknown_keys: list[ProjectKey] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)  # (version, account id)
    undeleted: list[tuple[int, str]] = field(default_factory=list)
    missing_labels: list[tuple[int, str]] = field(default_factory=list)  # (version, label)

    @property
    def clean(self) -> bool:
        return not (self.unknown_accounts or self.unknown_keys or self.missing or self.undeleted)


def reconcile(
    vault: Vault, name: str, connect: Connect, *, actor: str = "system", source: str = "cli"
) -> DriftReport:
    """List the project's accounts and keys and compare them with the vault's records."""
    record, secret = vault.reveal_admin_key(name, purpose="reconcile", actor=actor, source=source)
    cred = vault.get_upstream(name)
    api = AdminApi(connect(cred), secret, record.project_id)
    accounts = {a.id: a for a in api.list_service_accounts()}
    keys = api.list_api_keys()
    # every link in this project, whichever credential it belongs to, is keyguard's
    links = [s for s in vault.store.list_service_accounts() if s.project_id == record.project_id]
    live = {s.account_id for s in links if s.deleted_at is None}
    ours = {s.account_id for s in links}
    in_flight = {
        r.account_name for r in vault.store.list_rotations() if not r.state.terminal
    }
    labels = {v.version: v.label for v in cred.versions}
    report = DriftReport(name, record.project_id)
    for a in accounts.values():
        if a.id not in ours and a.name not in in_flight:
            report.unknown_accounts.append(a)
    for k in keys:
        owner = accounts.get(k.owner_id or "")
        flying = owner is not None and owner.name in in_flight
        if (k.owner_type != "service_account" or k.owner_id not in ours) and not flying:
            report.unknown_keys.append(k)
    for s in links:
        if s.upstream != name:
            continue
        if s.account_id in live and s.account_id not in accounts:
            report.missing.append((s.version, s.account_id))
            label = labels.get(s.version)
            if label is not None:  # a labelled version whose account is gone
                report.missing_labels.append((s.version, label.value))
        if s.account_id not in live and s.account_id in accounts:
            report.undeleted.append((s.version, s.account_id))
    return report
