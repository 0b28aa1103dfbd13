"""``keyguard upstream``: upstream (OpenAI) credentials in the vault."""

from __future__ import annotations

import click

from keyguard.cli.common import (
    actor,
    emit,
    json_option,
    kv,
    open_vault,
    parse_duration,
    read_secret,
    settings_from,
    table,
)
from keyguard.domain.records import DEFAULT_BASE_URL, Label
from keyguard.vault.views import compromised_warnings, iso, upstream_dict


@click.group("upstream")
def upstream() -> None:
    """Manage upstream (OpenAI) credentials, stored encrypted in the vault."""


@upstream.command("add")
@click.argument("name")
@click.option("--from-env", "from_env", metavar="VAR",
              help="Read the key from this environment variable.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input.")
@click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True,
              help="Upstream API base URL (https; http only to loopback with the opt-in).")
@click.option("--organization", help="OpenAI organization id sent upstream.")
@click.option("--project", help="OpenAI project id sent upstream.")
@click.option("--max-age", help="Rotate after this long, e.g. 90d.")
@click.option("--allow-insecure-loopback", is_flag=True,
              help="Allow a plain-http base URL on a loopback address (local testing).")
@click.option("--no-validate", is_flag=True, help="Accept a key that is not OpenAI-shaped.")
@json_option
@click.pass_context
def add(ctx: click.Context, name: str, from_env: str | None, from_stdin: bool, base_url: str,
        organization: str | None, project: str | None, max_age: str | None,
        allow_insecure_loopback: bool, no_validate: bool, as_json: bool) -> None:
    """Store a new upstream credential NAME; its key becomes version 1 (CURRENT).

    The key is read from --from-env VAR, from standard input, or a hidden prompt; never from
    the command line.
    """
    secret = read_secret(from_env=from_env, from_stdin=from_stdin, prompt=f"API key for {name}")
    vault = open_vault(settings_from(ctx))
    try:
        cred = vault.add_upstream(
            name, secret, base_url=base_url, organization=organization, project=project,
            max_age=parse_duration(max_age, setting="--max-age") if max_age else None,
            allow_insecure_loopback=allow_insecure_loopback, validate_key=not no_validate,
            actor=actor(), source="cli",
        )
    finally:
        vault.close()
    emit(as_json, upstream_dict(cred),
         lambda: click.echo(f"added upstream {cred.name!r} ({secret.redacted}, "
                            f"{secret.fingerprint}) -> {cred.base_url}"))


@upstream.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List upstream credentials."""
    vault = open_vault(settings_from(ctx))
    try:
        creds = vault.list_upstreams()
    finally:
        vault.close()

    def human() -> None:
        if not creds:
            click.echo("no upstream credentials: add one with 'keyguard upstream add NAME'")
            return
        rows = []
        for c in creds:
            cur = c.version_with(Label.CURRENT)
            leaked = c.compromised_in_use()
            state = ("COMPROMISED " + ",".join(f"v{v.version}" for v in leaked)) if leaked else ""
            rows.append((c.name, c.base_url, cur.version if cur else "-",
                         cur.fingerprint if cur else "-", iso(c.last_rotated_at or c.created_at),
                         state))
        table(("NAME", "BASE URL", "VERSION", "FINGERPRINT", "ROTATED", "STATE"), rows)
        for line in compromised_warnings(creds):
            click.echo(f"WARNING: {line}", err=True)

    emit(as_json, [upstream_dict(c) for c in creds], human)


@upstream.command("show")
@click.argument("name")
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one upstream credential and its versions (fingerprints only)."""
    vault = open_vault(settings_from(ctx))
    try:
        cred = vault.get_upstream(name)
    finally:
        vault.close()
    data = upstream_dict(cred)

    def human() -> None:
        kv({k: v for k, v in data.items() if k not in ("versions", "compromised_in_use")})
        table(("VERSION", "LABEL", "FINGERPRINT", "CREATED", "STATE", "COMPROMISED AT", "REASON"),
              [(v["version"], v["label"] or "", v["fingerprint"], v["created_at"],
                "COMPROMISED" if v["compromised"] else "", v["compromised_at"] or "",
                v["compromised_reason"] or "")
               for v in data["versions"]])
        for line in compromised_warnings([cred]):
            click.echo(f"WARNING: {line}", err=True)

    emit(as_json, data, human)


@upstream.command("mark-compromised")
@click.argument("name")
@click.option("--version", "version", type=int, required=True,
              help="The version whose key leaked (see 'keyguard upstream show NAME').")
@click.option("--reason", required=True,
              help="Where or how it leaked, in a few words (never the key itself).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def mark_compromised(ctx: click.Context, name: str, version: int, reason: str, yes: bool,
                     as_json: bool) -> None:
    """Record that version N of NAME leaked (for a leak learnt of some other way than
    'keyguard scan --revoke-managed').

    Permanent and audited; marking again keeps the first time. A CURRENT or PENDING version
    marked compromised makes NAME due for rotation at once ('keyguard rotate --due').
    """
    if not yes:
        click.confirm(f"Mark version {version} of upstream credential {name!r} compromised?"
                      " This cannot be undone", abort=True, err=True)
    vault = open_vault(settings_from(ctx))
    try:
        marked = vault.mark_upstream_compromised(name, version, reason, actor=actor(),
                                                 source="cli")
        cred = vault.get_upstream(name)
    finally:
        vault.close()
    data = upstream_dict(cred)

    def human() -> None:
        label = f" ({marked.label.value})" if marked.label else ""
        click.echo(f"upstream {name!r} version {version}{label} is marked COMPROMISED since"
                   f" {iso(marked.compromised_at)}: {marked.compromised_reason}")
        for line in compromised_warnings([cred]):
            click.echo(f"WARNING: {line}", err=True)

    emit(as_json, data, human)


@upstream.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even if active virtual keys use it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def remove(ctx: click.Context, name: str, force: bool, yes: bool) -> None:
    """Delete an upstream credential and every version of its key."""
    if not yes:
        click.confirm(f"Delete upstream credential {name!r} and all its key versions?",
                      abort=True, err=True)
    vault = open_vault(settings_from(ctx))
    try:
        vault.remove_upstream(name, force=force, actor=actor(), source="cli")
    finally:
        vault.close()
    click.echo(f"removed upstream {name!r}")


# rotation commands (rotate, revoke, reconcile, admin-key) live in their own module
from keyguard.cli.upstream_rotation_cmds import register as _register_rotation  # noqa: E402

_register_rotation(upstream)
