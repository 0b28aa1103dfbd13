"""``keyguard key``: virtual keys (scoped stand-ins for the real key)."""

from __future__ import annotations

import click

from keyguard.cli.common import (
    actor,
    emit,
    expiry_from,
    json_option,
    kv,
    open_vault,
    parse_duration,
    settings_from,
    show_once,
    table,
    utcnow,
)
from keyguard.domain.records import BudgetPeriod, KeySpec
from keyguard.vault.views import key_dict


@click.group("key")
def key() -> None:
    """Manage virtual keys: create, list, show, revoke."""


@key.command("create")
@click.argument("name")
@click.option("--upstream", default="default", show_default=True,
              help="Upstream credential the key's requests use.")
@click.option("--owner", default="", help="Who the key is for (free text).")
@click.option("--model", "models", multiple=True,
              help="Allowed model, exact or glob like 'gpt-4o*' (repeatable; default: any).")
@click.option("--endpoint", "endpoints", multiple=True,
              help="Allowed path, e.g. /v1/chat/completions or /v1/files* (repeatable).")
@click.option("--cidr", "cidrs", multiple=True,
              help="Allowed client network, IPv4 or IPv6 CIDR (repeatable; default: any).")
@click.option("--expires-in", help="Lifetime, e.g. 30d, 12h.")
@click.option("--expires-at", help="Expiry as ISO 8601 time (UTC if no offset).")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Concurrent requests.")
@click.option("--budget-usd", type=click.FloatRange(min=0), help="Spend limit per period.")
@click.option("--budget-period", type=click.Choice([p.value for p in BudgetPeriod]),
              default=BudgetPeriod.MONTHLY.value, show_default=True)
@click.option("--max-age", help="Rotate after this long, e.g. 90d.")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, upstream: str, owner: str, models: tuple[str, ...],
           endpoints: tuple[str, ...], cidrs: tuple[str, ...], expires_in: str | None,
           expires_at: str | None, rpm: int | None, tpm: int | None,
           max_concurrency: int | None, budget_usd: float | None, budget_period: str,
           max_age: str | None, as_json: bool) -> None:
    """Create a virtual key NAME. The key is printed once, here; keyguard keeps only a hash."""
    now = utcnow()
    expiry = expiry_from(expires_in, expires_at, now)
    spec = KeySpec(
        name=name, upstream=upstream, owner=owner, allowed_models=models,
        allowed_endpoints=endpoints, allowed_cidrs=cidrs, expires_at=expiry, rpm=rpm, tpm=tpm,
        max_concurrency=max_concurrency, budget_usd=budget_usd,
        budget_period=BudgetPeriod(budget_period),
        max_age=parse_duration(max_age, setting="--max-age") if max_age else None,
    )
    vault = open_vault(settings_from(ctx))
    try:
        record, token = vault.create_key(spec, actor=actor(), source="cli")
    finally:
        vault.close()
    show_once(as_json, key_dict(record, now), "key", token,
              f"created virtual key {record.key_id} ({record.name!r}) for upstream "
              f"{record.upstream!r}")


@key.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
@json_option
@click.pass_context
def list_(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List virtual keys with their status, age and rotation due date."""
    vault = open_vault(settings_from(ctx))
    try:
        keys = vault.list_keys()
        rotated = vault.key_rotated_at()
    finally:
        vault.close()
    now = utcnow()
    data = [key_dict(k, now, rotated.get(k.key_id)) for k in keys]
    if not show_all:
        data = [d for d in data if d["status"] == "active"]

    def human() -> None:
        if not data:
            click.echo("no virtual keys: create one with 'keyguard key create NAME'")
            return
        table(("ID", "NAME", "UPSTREAM", "STATUS", "AGE (d)", "EXPIRES", "ROTATE BY", "LAST USED"),
              [(d["key_id"], d["name"], d["upstream"], d["status"], d["age_days"],
                d["expires_at"] or "never", d["rotation_due_at"] or "-",
                d["last_used_at"] or "never") for d in data])

    emit(as_json, data, human)


@key.command("show")
@click.argument("key_id")
@json_option
@click.pass_context
def show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show one virtual key's scope, limits and state."""
    vault = open_vault(settings_from(ctx))
    try:
        record = vault.get_key(key_id)
    finally:
        vault.close()
    data = key_dict(record, utcnow())
    emit(as_json, data, lambda: kv(data))


@key.command("revoke")
@click.argument("key_id")
@click.option("--reason", help="Why (kept in the audit log).")
@json_option
@click.pass_context
def revoke(ctx: click.Context, key_id: str, reason: str | None, as_json: bool) -> None:
    """Revoke a virtual key at once and for good."""
    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        record = vault.revoke_key(key_id, reason=reason, actor=actor(), source="cli")
    finally:
        vault.close()
    announce(settings, "key.revoked", record.key_id)  # every gateway replica, right now
    data = key_dict(record, utcnow())
    emit(as_json, data, lambda: click.echo(f"revoked virtual key {record.key_id} "
                                           f"({record.name!r}) at {data['revoked_at']}"))


# `key rotate` lives in its own module
from keyguard.cli.key_rotation_cmds import register as _register_rotation  # noqa: E402

_register_rotation(key)

# `key usage` (and announcing changes to gateways) lives in its own module
from keyguard.cli.key_usage_cmds import announce  # noqa: E402
from keyguard.cli.key_usage_cmds import register as _register_usage  # noqa: E402

_register_usage(key)
