"""Converting records to and from SQL column values (shared by the SQL backends)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from keyguard.domain.audit import AuditRecord
from keyguard.domain.records import (
    BudgetPeriod,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    VirtualKey,
)


def iso(value: datetime | None) -> str | None:
    """A UTC ISO 8601 string (naive datetimes are refused: time is always aware here)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("datetimes stored in the vault must be timezone-aware")
    return value.astimezone(timezone.utc).isoformat()


def blob(value: object) -> bytes:
    """A BLOB column's value; a value stored with the wrong type still becomes its bytes
    (so tampering surfaces as a decryption failure, not a crash)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return str(value).encode()


def dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def dt_req(value: str) -> datetime:
    return datetime.fromisoformat(value)


def seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def delta(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def jlist(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def tlist(raw: str) -> tuple[str, ...]:
    return tuple(json.loads(raw))


UPSTREAM_COLUMNS = (
    "name, provider, base_url, organization, project, allow_insecure_loopback, created_at,"
    " last_rotated_at, max_age_s"
)


def upstream_params(c: UpstreamCredential) -> tuple[Any, ...]:
    return (
        c.name,
        c.provider,
        c.base_url,
        c.organization,
        c.project,
        int(c.allow_insecure_loopback),
        iso(c.created_at),
        iso(c.last_rotated_at),
        seconds(c.max_age),
    )


def upstream_from_row(
    row: Sequence[Any], versions: Sequence[UpstreamVersion]
) -> UpstreamCredential:
    return UpstreamCredential(
        name=row[0],
        provider=row[1],
        base_url=row[2],
        organization=row[3],
        project=row[4],
        allow_insecure_loopback=bool(row[5]),
        created_at=dt(row[6]),
        last_rotated_at=dt(row[7]),
        max_age=delta(row[8]),
        versions=tuple(versions),
    )


VERSION_COLUMNS = (
    "upstream, version, fingerprint, created_at, label,"
    " compromised_at, compromised_reason, compromised_source"
)


def version_from_row(row: Sequence[Any]) -> UpstreamVersion:
    return UpstreamVersion(
        upstream=row[0],
        version=int(row[1]),
        fingerprint=row[2],
        created_at=dt_req(row[3]),
        label=Label(row[4]) if row[4] is not None else None,
        compromised_at=dt(row[5]),
        compromised_reason=row[6],
        compromised_source=row[7],
    )


KEY_COLUMNS = (
    "key_id, name, owner, upstream, allowed_models, allowed_endpoints, allowed_cidrs, expires_at,"
    " rpm, tpm, max_concurrency, budget_usd, budget_period, created_at, last_used_at, revoked_at,"
    " max_age_s"
)


def key_params(k: VirtualKey) -> tuple[Any, ...]:
    return (
        k.key_id,
        k.name,
        k.owner,
        k.upstream,
        jlist(k.allowed_models),
        jlist(k.allowed_endpoints),
        jlist(k.allowed_cidrs),
        iso(k.expires_at),
        k.rpm,
        k.tpm,
        k.max_concurrency,
        k.budget_usd,
        k.budget_period.value,
        iso(k.created_at),
        iso(k.last_used_at),
        iso(k.revoked_at),
        seconds(k.max_age),
    )


def key_from_row(row: Sequence[Any]) -> VirtualKey:
    return VirtualKey(
        key_id=row[0],
        name=row[1],
        owner=row[2],
        upstream=row[3],
        allowed_models=tlist(row[4]),
        allowed_endpoints=tlist(row[5]),
        allowed_cidrs=tlist(row[6]),
        expires_at=dt(row[7]),
        rpm=row[8],
        tpm=row[9],
        max_concurrency=row[10],
        budget_usd=row[11],
        budget_period=BudgetPeriod(row[12]),
        created_at=dt_req(row[13]),
        last_used_at=dt(row[14]),
        revoked_at=dt(row[15]),
        max_age=delta(row[16]),
    )


AUDIT_COLUMNS = (
    "seq, format, time, action, actor, subject, source, outcome, details, prev_hash, hash"
)


def audit_from_row(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        seq=int(row[0]),
        format=int(row[1]),
        time=dt_req(row[2]),
        action=row[3],
        actor=row[4],
        subject=row[5],
        source=row[6],
        outcome=row[7],
        details=json.loads(row[8]),
        prev_hash=row[9],
        hash=row[10],
    )
