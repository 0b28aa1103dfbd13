"""``keyguard admin-token``: tokens for keyguard's admin API (``/admin/v1/...``).

A token is printed once, at creation; the vault keeps only a keyed hash of it. Scopes:
``read`` (GET routes only) and ``admin`` (everything, including creating and revoking keys).
A token may expire (``--expires-in 30d`` / ``--expires-at``); ``list`` shows when, and when it
was last used (recorded at most once a minute).
"""

from __future__ import annotations

import click

from keyguard.cli.common import (
    actor,
    emit,
    expiry_from,
    json_option,
    kv,
    open_vault,
    settings_from,
    show_once,
    table,
    utcnow,
)
from keyguard.domain.admin_tokens import AdminScope
from keyguard.vault.views import admin_token_dict


@click.group("admin-token")
def admin_token() -> None:
    """Manage admin API tokens: create, list, revoke."""


@admin_token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice([s.value for s in AdminScope]), default="read",
              show_default=True, help="read: GET routes only; admin: may also change things.")
@click.option("--expires-in", help="Lifetime, e.g. 30d, 12h (default: until revoked).")
@click.option("--expires-at", help="Expiry as ISO 8601 time (UTC if no offset).")
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, scope: str, expires_in: str | None,
           expires_at: str | None, as_json: bool) -> None:
    """Create an admin token NAME. It is printed once, here; keyguard keeps only a hash."""
    now = utcnow()
    expiry = expiry_from(expires_in, expires_at, now)
    vault = open_vault(settings_from(ctx))
    try:
        record, token = vault.create_admin_token(
            name, scope, expires_at=expiry, actor=actor(), source="cli"
        )
    finally:
        vault.close()
    until = f", expires {expiry.isoformat(timespec='seconds')}" if expiry else ""
    show_once(as_json, admin_token_dict(record, now), "token", token,
              f"created admin token {record.token_id} ({record.name!r}, scope {scope}{until})")


@admin_token.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired tokens.")
@json_option
@click.pass_context
def list_(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List admin tokens (ids, names, scopes, expiry, last use; never the tokens)."""
    vault = open_vault(settings_from(ctx))
    try:
        tokens = vault.list_admin_tokens()
    finally:
        vault.close()
    now = utcnow()
    data = [admin_token_dict(t, now) for t in tokens]
    if not show_all:
        data = [d for d in data if d["status"] == "active"]

    def human() -> None:
        if not data:
            click.echo("no admin tokens: create one with 'keyguard admin-token create NAME'")
            return
        table(("ID", "NAME", "SCOPE", "STATUS", "CREATED", "BY", "EXPIRES", "LAST USED"),
              [(d["token_id"], d["name"], d["scope"], d["status"], d["created_at"],
                d["created_by"], d["expires_at"] or "never", d["last_used_at"] or "never")
               for d in data])

    emit(as_json, data, human)


@admin_token.command("revoke")
@click.argument("token_id")
@json_option
@click.pass_context
def revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke an admin token at once and for good."""
    vault = open_vault(settings_from(ctx))
    try:
        record = vault.revoke_admin_token(token_id, actor=actor(), source="cli")
    finally:
        vault.close()
    data = admin_token_dict(record, utcnow())
    emit(as_json, data, lambda: kv(data))
