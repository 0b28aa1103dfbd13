"""Key rotation services: upstream keys through the OpenAI Admin API (a resumable state
machine), manual and emergency rotation, drift detection, schedules.

Virtual-key rotation lives in the vault (:meth:`keyguard.vault.Vault.rotate_key`).
"""

from __future__ import annotations

from keyguard.rotation.admin_api import AdminApi, AdminApiError, Endpoint, check_key, tls_context
from keyguard.rotation.drift import DriftReport, reconcile
from keyguard.rotation.manual import emergency_revoke, rotate_manually
from keyguard.rotation.schedule import PeriodicRotation, run_due
from keyguard.rotation.upstream import RotationPolicy, UpstreamRotator

__all__ = [
    "AdminApi",
    "AdminApiError",
    "DriftReport",
    "Endpoint",
    "PeriodicRotation",
    "RotationPolicy",
    "UpstreamRotator",
    "check_key",
    "emergency_revoke",
    "reconcile",
    "rotate_manually",
    "run_due",
    "tls_context",
]
