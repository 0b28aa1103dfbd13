"""``keyguard admin-token``: tokens for keyguard's admin API (``/admin/v1/...``).

A token is printed once, at creation; the vault keeps only a keyed hash of it. Scopes:
``read`` (GET routes only) and ``admin`` (everything, including creating and revoking keys).
"""

from __future__ import annotations

import click

from keyguard.cli.common import (
    actor,
    emit,
    json_option,
    kv,
    open_vault,
    settings_from,
    show_once,
    table,
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
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, scope: str, as_json: bool) -> None:
    """Create an admin token NAME. It is printed once, here; keyguard keeps only a hash."""
    vault = open_vault(settings_from(ctx))
    try:
        record, token = vault.create_admin_token(name, scope, actor=actor(), source="cli")
    finally:
        vault.close()
    show_once(as_json, admin_token_dict(record), "token", token,
              f"created admin token {record.token_id} ({record.name!r}, scope {scope})")


@admin_token.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked tokens.")
@json_option
@click.pass_context
def list_(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List admin tokens (ids, names, scopes; never the tokens)."""
    vault = open_vault(settings_from(ctx))
    try:
        tokens = vault.list_admin_tokens()
    finally:
        vault.close()
    data = [admin_token_dict(t) for t in tokens if show_all or not t.revoked]

    def human() -> None:
        if not data:
            click.echo("no admin tokens: create one with 'keyguard admin-token create NAME'")
            return
        table(("ID", "NAME", "SCOPE", "STATUS", "CREATED", "BY"),
              [(d["token_id"], d["name"], d["scope"], d["status"], d["created_at"],
                d["created_by"]) for d in data])

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
    data = admin_token_dict(record)
    emit(as_json, data, lambda: kv(data))
