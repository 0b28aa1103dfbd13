"""The vault: upstream credentials, virtual keys, audit log and key rotation over a store.

Start with :class:`Vault` (``Vault.create`` / ``Vault.open``); the master key comes from
:func:`resolve_master_key`.
"""

from __future__ import annotations

from keyguard.crypto.master import MasterKey, ScryptParams
from keyguard.crypto.sources import ResolvedMasterKey, create_key_file, resolve_master_key
from keyguard.domain.audit import AuditEvent, AuditRecord, ChainProblem
from keyguard.domain.records import (
    BudgetPeriod,
    KeySpec,
    Label,
    ManagedMatch,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)
from keyguard.vault.audit import AuditLog, AuditReport
from keyguard.vault.auth import KeyAuthenticator
from keyguard.vault.vault import Vault

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "AuditReport",
    "BudgetPeriod",
    "ChainProblem",
    "KeyAuthenticator",
    "KeySpec",
    "Label",
    "ManagedMatch",
    "MasterKey",
    "ResolvedMasterKey",
    "ScryptParams",
    "UpstreamCredential",
    "UpstreamVersion",
    "Vault",
    "VirtualKey",
    "create_key_file",
    "resolve_master_key",
]
