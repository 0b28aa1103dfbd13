"""``keyguard upstream rotate|revoke|reconcile`` and ``keyguard upstream admin-key ...``.

Registered onto the ``upstream`` group by :mod:`keyguard.cli.upstream_cmds`.
"""

from __future__ import annotations

from typing import Any

import click

from keyguard.cli.common import (
    actor,
    emit,
    json_option,
    kv,
    open_vault,
    read_secret,
    settings_from,
    table,
)
from keyguard.cli.rotate_cmds import connector
from keyguard.errors import ConfigError, KeyNotFound
from keyguard.vault.views import iso


@click.command("rotate")
@click.argument("name")
@click.option("--from-env", "from_env", metavar="VAR", help="Read the new key from this variable.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the new key from standard input.")
@click.option("--no-test", is_flag=True, help="Do not test the new key with a cheap API call.")
@click.option("--no-validate", is_flag=True, help="Accept a key that is not OpenAI-shaped.")
@json_option
@click.pass_context
def rotate(
    ctx: click.Context,
    name: str,
    from_env: str | None,
    from_stdin: bool,
    no_test: bool,
    no_validate: bool,
    as_json: bool,
) -> None:
    """Rotate NAME by hand: test the new key, make it CURRENT (the old one stays PREVIOUS, the
    gateway's fallback). For rotation through the Admin API use 'keyguard rotate NAME'."""
    from keyguard.rotation.manual import rotate_manually

    secret = read_secret(from_env=from_env, from_stdin=from_stdin, prompt=f"New API key for {name}")
    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        result = rotate_manually(
            vault,
            name,
            secret,
            connector(settings),
            test=not no_test,
            validate_key=not no_validate,
            actor=actor(),
            source="cli",
        )
    finally:
        vault.close()
    data = {
        "upstream": name,
        "new_version": result.new.version,
        "fingerprint": result.new.fingerprint,
        "old_version": result.old_version,
        "tested": not no_test,
        "reminder": result.reminder,
    }

    def human() -> None:
        click.echo(f"{name!r}: version {result.new.version} ({secret.redacted}) is CURRENT")
        click.echo(result.reminder, err=True)

    emit(as_json, data, human)


@click.command("revoke")
@click.argument("name")
@click.option(
    "--now",
    "now_",
    is_flag=True,
    required=True,
    help="Required: revoke the CURRENT key immediately (emergency).",
)
@click.option(
    "--from-env",
    "from_env",
    metavar="VAR",
    help="Replacement key from this variable (needed without an admin key).",
)
@click.option("--stdin", "from_stdin", is_flag=True, help="Replacement key from standard input.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def revoke(
    ctx: click.Context,
    name: str,
    now_: bool,
    from_env: str | None,
    from_stdin: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Emergency: replace NAME's CURRENT key with a fresh one in one step and cut the old one off
    (its service account is deleted when keyguard created it; no fallback to it)."""
    from keyguard.rotation.manual import emergency_revoke

    if not yes:
        click.confirm(f"Revoke the CURRENT key of {name!r} now?", abort=True, err=True)
    new_key = (
        read_secret(from_env=from_env, from_stdin=from_stdin, prompt="Replacement key")
        if from_env or from_stdin
        else None
    )
    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        result = emergency_revoke(
            vault, name, connector(settings), new_key=new_key, actor=actor(), source="cli"
        )
    finally:
        vault.close()
    data = {
        "upstream": name,
        "revoked_version": result.revoked_version,
        "new_version": result.new_version,
        "service_account_deleted": result.account_deleted,
        "reminder": result.reminder,
    }

    def human() -> None:
        click.echo(
            f"{name!r}: version {result.revoked_version} revoked; version "
            f"{result.new_version} is CURRENT"
        )
        click.echo(result.reminder, err=True)

    emit(as_json, data, human)


@click.command("reconcile")
@click.argument("name")
@json_option
@click.pass_context
def reconcile(ctx: click.Context, name: str, as_json: bool) -> None:
    """Compare NAME's OpenAI project with the vault: report service accounts and keys keyguard
    did not create, and accounts keyguard believes live that are gone. Exit 1 on drift."""
    from keyguard.rotation.drift import reconcile as run

    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        report = run(vault, name, connector(settings), actor=actor(), source="cli")
    finally:
        vault.close()
    labels = dict(report.missing_labels)
    data: dict[str, Any] = {
        "upstream": name,
        "project_id": report.project_id,
        "clean": report.clean,
        "unknown_accounts": [
            {"id": a.id, "name": a.name, "created_at": iso(a.created_at)}
            for a in report.unknown_accounts
        ],
        "unknown_keys": [
            {
                "id": k.id,
                "name": k.name,
                "redacted_value": k.redacted_value,
                "owner_type": k.owner_type,
                "owner_id": k.owner_id,
                "last_used_at": iso(k.last_used_at),
            }
            for k in report.unknown_keys
        ],
        # a missing account behind a labelled (CURRENT, PENDING, PREVIOUS) version is the one
        # to act on first: the gateway may be sending that key
        "missing": [
            {"version": v, "service_account": a, "label": labels.get(v)} for v, a in report.missing
        ],
        "undeleted": [{"version": v, "service_account": a} for v, a in report.undeleted],
    }

    def human() -> None:
        if report.clean:
            click.echo(f"{name!r}: no drift in project {report.project_id}")
            return
        rows = [
            ("account not created by keyguard", a["id"], a["name"])
            for a in data["unknown_accounts"]
        ]
        rows += [
            ("key not created by keyguard", k["id"], f"{k['owner_type']} {k['owner_id']}")
            for k in data["unknown_keys"]
        ]
        rows += [
            (
                "gone but believed live",
                m["service_account"],
                f"version {m['version']}" + (f" ({m['label']})" if m["label"] else ""),
            )
            for m in data["missing"]
        ]
        rows += [
            ("deleted by keyguard, still exists", m["service_account"], f"version {m['version']}")
            for m in data["undeleted"]
        ]
        table(("DRIFT", "ID", "WHAT"), rows)

    emit(as_json, data, human)
    if not report.clean:
        ctx.exit(1)


@click.group("admin-key")
def admin_key() -> None:
    """The OpenAI admin key that rotates an upstream's keys (kept apart, never used for
    model traffic)."""


@admin_key.command("set")
@click.argument("name")
@click.option("--project-id", required=True, help="The OpenAI project (proj_...) of NAME's keys.")
@click.option("--from-env", "from_env", metavar="VAR", help="Read the admin key from this var.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the admin key from standard input.")
@click.option(
    "--current-service-account",
    "current_account",
    metavar="ID",
    help="The service account (svc_acct_...) holding NAME's CURRENT key, so rotation "
    "can retire it.",
)
@click.option("--no-test", is_flag=True, help="Do not check the admin key against the API.")
@click.option("--no-validate", is_flag=True, help="Accept a key that is not sk-admin- shaped.")
@click.pass_context
def admin_key_set(
    ctx: click.Context,
    name: str,
    project_id: str,
    from_env: str | None,
    from_stdin: bool,
    current_account: str | None,
    no_test: bool,
    no_validate: bool,
) -> None:
    """Store the admin key for upstream NAME (from --from-env, --stdin or a prompt; never argv)."""
    from keyguard.domain.records import Label
    from keyguard.domain.rotation import ServiceAccountLink
    from keyguard.rotation.admin_api import AdminApi
    from keyguard.rotation.upstream import check_project
    from keyguard.vault.admin_keys import check_admin_key

    secret = read_secret(
        from_env=from_env, from_stdin=from_stdin, prompt="OpenAI admin key", name="admin key"
    )
    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        cred = vault.get_upstream(name)
        check_admin_key(vault.store, secret, project_id=project_id, validate_key=not no_validate)
        api = AdminApi(connector(settings)(cred), secret, project_id)
        if not no_test or current_account:
            accounts = {a.id for a in api.list_service_accounts()}
            if current_account and current_account not in accounts:
                raise KeyNotFound(f"no service account {current_account} in {project_id}")
        check_project(cred, project_id)
        vault.set_admin_key(
            name,
            secret,
            project_id=project_id,
            validate_key=not no_validate,
            actor=actor(),
            source="cli",
        )
        if current_account:
            current = cred.version_with(Label.CURRENT)
            if current is None:
                raise ConfigError(f"{name!r} has no CURRENT version to link")
            key_id = next(
                (k.id for k in api.list_api_keys() if k.owner_id == current_account), None
            )
            vault.store.add_service_account(
                ServiceAccountLink(
                    name, current.version, project_id, current_account, key_id, vault.now()
                )
            )
    finally:
        vault.close()
    click.echo(
        f"admin key for {name!r} stored ({secret.redacted}, {secret.fingerprint}); "
        f"project {project_id}"
    )


@admin_key.command("show")
@click.argument("name")
@json_option
@click.pass_context
def admin_key_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show which project NAME's admin key acts on (fingerprint only)."""
    vault = open_vault(settings_from(ctx))
    try:
        record = vault.admin_key_record(name)
        links = vault.store.list_service_accounts(name)
    finally:
        vault.close()
    if record is None:
        raise KeyNotFound(f"upstream credential {name!r} has no admin key")
    data = {
        "upstream": name,
        "project_id": record.project_id,
        "fingerprint": record.fingerprint,
        "created_at": iso(record.created_at),
        "service_accounts": [
            {"version": s.version, "id": s.account_id, "deleted_at": iso(s.deleted_at)}
            for s in links
        ],
    }
    emit(as_json, data, lambda: kv({k: v for k, v in data.items() if k != "service_accounts"}))


@admin_key.command("remove")
@click.argument("name")
@click.pass_context
def admin_key_remove(ctx: click.Context, name: str) -> None:
    """Forget NAME's admin key (also revoke it in the OpenAI dashboard)."""
    vault = open_vault(settings_from(ctx))
    try:
        removed = vault.remove_admin_key(name, actor=actor(), source="cli")
    finally:
        vault.close()
    if not removed:
        raise KeyNotFound(f"upstream credential {name!r} has no admin key")
    click.echo(f"admin key of {name!r} removed; revoke it in the OpenAI dashboard too")


def register(group: click.Group) -> None:
    """Add these commands to the ``upstream`` group."""
    for command in (rotate, revoke, reconcile, admin_key):
        group.add_command(command)
