"""JSON-ready views of vault records, shared by the CLI's ``--json`` output and the admin API
(so both always agree). Ids, names, fingerprints and figures only: never key material."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from keyguard.domain.admin_tokens import AdminToken
from keyguard.domain.audit import AuditRecord
from keyguard.domain.limits import Usage
from keyguard.domain.records import UpstreamCredential, VirtualKey
from keyguard.domain.rotation import next_due


def iso(value: datetime | None) -> str | None:
    """ISO 8601 (UTC, seconds) for output, or None."""
    return value.isoformat(timespec="seconds") if value is not None else None


def format_duration(delta: timedelta | None) -> str | None:
    """A duration for display in its largest whole unit (``90d``, ``12h``, ``45s``)."""
    if delta is None:
        return None
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def key_status(key: VirtualKey, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if key.revoked:
        return "revoked"
    if key.expired(now):
        return "expired"
    return "active"


def key_dict(key: VirtualKey, now: datetime, rotated_at: datetime | None = None) -> dict[str, Any]:
    """A virtual key's record as JSON-ready data (never its secret); age counts from the last
    rotation (``rotated_at``) when there was one."""
    since = rotated_at or key.created_at
    due = since + key.max_age if key.max_age else None
    return {
        "key_id": key.key_id,
        "name": key.name,
        "owner": key.owner,
        "upstream": key.upstream,
        "status": key_status(key, now),
        "allowed_models": list(key.allowed_models),
        "allowed_endpoints": list(key.allowed_endpoints),
        "allowed_cidrs": list(key.allowed_cidrs),
        "expires_at": iso(key.expires_at),
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_concurrency": key.max_concurrency,
        "budget_usd": key.budget_usd,
        "budget_period": key.budget_period.value,
        "created_at": iso(key.created_at),
        "rotated_at": iso(rotated_at),
        "age_days": round((now - since).total_seconds() / 86400, 1),
        "max_age": format_duration(key.max_age),
        "rotation_due_at": iso(due),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


def upstream_dict(cred: UpstreamCredential) -> dict[str, Any]:
    """A credential as JSON-ready data (fingerprints only, never key material)."""
    return {
        "name": cred.name,
        "provider": cred.provider,
        "base_url": cred.base_url,
        "organization": cred.organization,
        "project": cred.project,
        "allow_insecure_loopback": cred.allow_insecure_loopback,
        "created_at": iso(cred.created_at),
        "last_rotated_at": iso(cred.last_rotated_at),
        "max_age": format_duration(cred.max_age),
        "rotation_due_at": iso(next_due(cred.max_age, cred.last_rotated_at or cred.created_at)),
        "versions": [
            {
                "version": v.version,
                "label": v.label.value if v.label else None,
                "fingerprint": v.fingerprint,
                "created_at": iso(v.created_at),
                "compromised": v.compromised,
                "compromised_at": iso(v.compromised_at),
                "compromised_reason": v.compromised_reason,
                "compromised_source": v.compromised_source,
            }
            for v in cred.versions
        ],
        "compromised_in_use": [v.version for v in cred.compromised_in_use()],
    }


def compromised_warnings(creds: Iterable[UpstreamCredential]) -> list[str]:
    """One line per CURRENT or PENDING version marked compromised (empty when none)."""
    return [
        f"upstream {c.name!r} version {v.version} ({v.label.value if v.label else '-'}) is"
        f" COMPROMISED since {iso(v.compromised_at)} ({v.compromised_reason}): replace it now"
        f" ('keyguard rotate --due', or 'keyguard upstream revoke {c.name} --now"
        " --from-env VAR' without an admin key)"
        for c in creds
        for v in c.compromised_in_use()
    ]


def record_dict(r: AuditRecord) -> dict[str, Any]:
    """An audit record as JSON-ready data."""
    return {
        "seq": r.seq,
        "time": iso(r.time),
        "action": r.action,
        "actor": r.actor,
        "subject": r.subject,
        "source": r.source,
        "outcome": r.outcome,
        "details": dict(r.details),
        "hash": r.hash,
    }


def usage_dict(
    key: VirtualKey, u: Usage, backend: str, *, live: bool | None = None
) -> dict[str, Any]:
    """JSON-ready usage of one key (ids and figures only). The per-minute and in-flight
    counters are shown when ``live`` (default: only from Redis; the gateway's own in-process
    counters are live too, the CLI cannot see them)."""
    live = backend == "redis" if live is None else live
    remaining = None if u.budget_usd is None else max(u.budget_usd - u.spent_usd - u.held_usd, 0)
    return {
        "key_id": key.key_id,
        "name": key.name,
        "backend": backend,
        "budget_period": key.budget_period.value,
        "period": u.period,
        "period_start": iso(u.period_start),
        "period_end": iso(u.period_end),
        "spent_usd": round(u.spent_usd, 6),
        "held_usd": round(u.held_usd, 6),
        "budget_usd": u.budget_usd,
        "remaining_usd": None if remaining is None else round(remaining, 6),
        "requests_last_minute": u.requests_last_minute if live else None,
        "rpm": key.rpm,
        "tokens_last_minute": u.tokens_last_minute if live else None,
        "tpm": key.tpm,
        "in_flight": u.in_flight if live else None,
        "max_concurrency": key.max_concurrency,
    }


def admin_token_dict(token: AdminToken, now: datetime) -> dict[str, Any]:
    """An admin token's record as JSON-ready data (never the token); ``status`` is
    ``active``, ``expired`` or ``revoked`` at ``now``."""
    return {
        "token_id": token.token_id,
        "name": token.name,
        "scope": token.scope.value,
        "status": token.status(now),
        "created_at": iso(token.created_at),
        "created_by": token.created_by,
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }
