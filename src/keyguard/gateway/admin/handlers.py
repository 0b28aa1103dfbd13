"""The admin API's operations: plain functions over the vault (each ``(call) -> (status,
payload)``). Synchronous ones run on a worker thread (vault calls block on SQLite/PostgreSQL);
the one that needs the gateway's limiter (usage) is a coroutine and offloads its own vault read.

Payloads are built by :mod:`keyguard.vault.views`, the same shapes as the CLI's ``--json``.
Only two carry key material: the new virtual key of ``create`` and of ``rotate`` (once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from keyguard.domain.limits import Limits, Usage, period_bounds, period_id
from keyguard.domain.pricing import nano_to_usd
from keyguard.domain.records import BudgetPeriod, KeySpec, VirtualKey
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError
from keyguard.gateway.limits import Admission
from keyguard.limits.memory import AsyncMemoryLimiter, spend_store_for
from keyguard.limits.ports import LimiterUnavailable
from keyguard.rotation.manual import rotate_manually
from keyguard.rotation.upstream import Connect, UpstreamRotator
from keyguard.vault.vault import Vault
from keyguard.vault.views import iso, key_dict, record_dict, upstream_dict, usage_dict

Payload = tuple[int, dict[str, Any]]
#: publishes a committed key change to every replica: ``announce(kind, subject)``
Announce = Callable[[str, str], None]


@dataclass
class Services:
    """What handlers need besides the vault; wired once per gateway worker."""

    connect: Connect
    limits: Admission | None = None
    announce: Announce | None = None


@dataclass
class Call:
    """One admin API call: who, from where, and its parsed input."""

    vault: Vault
    services: Services
    actor: str
    source: str
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def announce(self, kind: str, subject: str) -> None:
        if self.services.announce is not None:
            self.services.announce(kind, subject)


class Unavailable(Exception):
    """A dependency (the limits store) cannot answer now: 503."""


# -- virtual keys ---------------------------------------------------------------------------


def list_keys(call: Call) -> Payload:
    v = call.vault
    show_all = _bool_param(call.query, "all")
    now, rotated = v.now(), v.key_rotated_at()
    data = [key_dict(k, now, rotated.get(k.key_id)) for k in v.list_keys()]
    return 200, {"object": "list", "data": [d for d in data if show_all or d["status"] == "active"]}


def _expiry(body: dict[str, Any], now: datetime) -> datetime | None:
    if "expires_at" in body and "expires_in_s" in body:
        raise ConfigError("give expires_at or expires_in_s, not both")
    if "expires_in_s" in body:
        return now + timedelta(seconds=body["expires_in_s"])
    if "expires_at" not in body:
        return None
    try:
        when = datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("expires_at must be an ISO 8601 time") from None
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if when <= now:
        raise ConfigError("expires_at is in the past")
    return when


def create_key(call: Call) -> Payload:
    b, v = call.body, call.vault
    now = v.now()
    spec = KeySpec(
        name=b["name"],
        upstream=b["upstream"],
        owner=b.get("owner", ""),
        allowed_models=tuple(b.get("allowed_models", ())),
        allowed_endpoints=tuple(b.get("allowed_endpoints", ())),
        allowed_cidrs=tuple(b.get("allowed_cidrs", ())),
        expires_at=_expiry(b, now),
        rpm=b.get("rpm"),
        tpm=b.get("tpm"),
        max_concurrency=b.get("max_concurrency"),
        budget_usd=b.get("budget_usd"),
        budget_period=BudgetPeriod(b["budget_period"]),
        max_age=timedelta(seconds=b["max_age_s"]) if "max_age_s" in b else None,
    )
    record, token = v.create_key(spec, actor=call.actor, source=call.source)
    call.announce("key.created", record.key_id)
    return 201, {**key_dict(record, now), "key": token.reveal()}


def show_key(call: Call) -> Payload:
    v = call.vault
    key = v.get_key(call.params["key_id"])
    return 200, key_dict(key, v.now(), v.key_rotated_at().get(key.key_id))


def revoke_key(call: Call) -> Payload:
    v = call.vault
    key = v.revoke_key(
        call.params["key_id"], reason=call.body.get("reason"), actor=call.actor, source=call.source
    )
    call.announce("key.revoked", key.key_id)
    return 200, key_dict(key, v.now())


def rotate_key(call: Call) -> Payload:
    v = call.vault
    grace = timedelta(seconds=call.body["grace_s"])
    key, token = v.rotate_key(
        call.params["key_id"], grace=grace, actor=call.actor, source=call.source
    )
    call.announce("key.rotated", key.key_id)
    until = iso(v.now() + grace)
    return 200, {
        "key_id": key.key_id,
        "name": key.name,
        "old_key_valid_until": until,
        "key": token.reveal(),
    }


def _stored_usage(vault: Vault, key: VirtualKey, now: datetime) -> Usage:
    """Budget spent as persisted in the vault (no limiter in this gateway)."""
    limits = Limits.of(key)
    period = period_id(limits.period, now)
    spend = spend_store_for(vault.store)
    spent = spend.spend_of(key.key_id).get(period, 0) if spend is not None else 0
    start, end = period_bounds(limits.period, now)
    usd = nano_to_usd(spent)
    return Usage(key.key_id, -1, -1, -1, period, usd, 0.0, key.budget_usd, start, end)


async def key_usage(call: Call) -> Payload:
    v = call.vault
    key = await asyncio.to_thread(v.get_key, call.params["key_id"])
    now = v.now()
    admission = call.services.limits
    if admission is None:
        usage = await asyncio.to_thread(_stored_usage, v, key, now)
        return 200, usage_dict(key, usage, "in-process")
    try:
        usage = await admission.usage(key, now)
    except LimiterUnavailable:
        raise Unavailable("the limits store (Redis) is unreachable") from None
    backend = "in-process" if isinstance(admission.limiter, AsyncMemoryLimiter) else "redis"
    return 200, usage_dict(key, usage, backend, live=True)


# -- upstreams ------------------------------------------------------------------------------


def list_upstreams(call: Call) -> Payload:
    return 200, {"object": "list", "data": [upstream_dict(c) for c in call.vault.list_upstreams()]}


def rotate_upstream(call: Call) -> Payload:
    name, b = call.params["name"], call.body
    connect = call.services.connect
    # the schema (UpstreamRotate) already required new_key for 'manual', refused it for 'admin'
    if b["mode"] == "admin":
        rotator = UpstreamRotator(call.vault, connect, actor=call.actor, source=call.source)
        r = rotator.start(name)
        call.announce("upstream.rotated", name)
        return 200, {
            "upstream": name,
            "mode": "admin",
            "state": r.state.value,
            "rotation_id": r.rotation_id,
            "new_version": r.new_version,
            "old_version": r.old_version,
            "fingerprint": None,
            "tested": True,
            "reminder": r.detail or None,
        }
    secret = Secret(b["new_key"], name=f"new key for {name}")
    result = rotate_manually(
        call.vault,
        name,
        secret,
        connect,
        test=b["test"],
        validate_key=b["validate"],
        actor=call.actor,
        source=call.source,
    )
    call.announce("upstream.rotated", name)
    return 200, {
        "upstream": name,
        "mode": "manual",
        "state": None,
        "rotation_id": None,
        "new_version": result.new.version,
        "old_version": result.old_version,
        "fingerprint": result.new.fingerprint,
        "tested": b["test"],
        "reminder": result.reminder,
    }


# -- audit log ------------------------------------------------------------------------------


def _bool_param(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ConfigError(f"query parameter {name} must be true or false")
    return raw in ("true", "1")


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"query parameter {name} must be an integer from {low} to {high}")
    return int(raw)


def list_audit(call: Call) -> Payload:
    after = _int_param(call.query, "after", 0, 0, 2**62)
    limit = _int_param(call.query, "limit", 100, 1, 1000)
    records = call.vault.audit.list(after_seq=after, limit=limit + 1)
    page = records[:limit]
    return 200, {
        "object": "list",
        "data": [record_dict(r) for r in page],
        "has_more": len(records) > limit,
        "next_after": page[-1].seq if page else None,
    }


def verify_audit(call: Call) -> Payload:
    report = call.vault.audit.verify()
    problems = [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems]
    return 200, {"ok": report.ok, "records": report.count, "problems": problems}
