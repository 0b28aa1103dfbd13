"""``keyguard init``, ``keyguard up`` and ``keyguard vault`` (maintenance of the vault itself)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from keyguard.cli.common import (
    actor,
    emit,
    json_option,
    kv,
    open_vault,
    prompt_passphrase,
    settings_from,
)
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, KeyNotFound
from keyguard.vault.views import compromised_warnings

MASTER_SOURCES = ("file", "passphrase", "keyring")


@click.command("init")
@click.option("--master", "master_source", type=click.Choice(MASTER_SOURCES), default="file",
              show_default=True,
              help="Where the new master key lives: a 0600 key file in the home, a passphrase "
                   "(scrypt), or the OS keyring. KEYGUARD_MASTER_KEY, if set, is used instead.")
@json_option
@click.pass_context
def init_cmd(ctx: click.Context, master_source: str, as_json: bool) -> None:
    """Create the keyguard home, a master key and an empty vault."""
    from keyguard.wiring import create_vault

    settings = settings_from(ctx)
    vault = create_vault(settings, os.environ, passphrase=prompt_passphrase,
                         master_source=master_source)
    try:
        data = {"home": str(settings.home), "database_url": settings.safe_database_url,
                "vault_id": vault.vault_id,
                "master_key": "KEYGUARD_MASTER_KEY" if os.environ.get("KEYGUARD_MASTER_KEY")
                else master_source}
    finally:
        vault.close()

    def human() -> None:
        click.echo("created vault")
        kv(data)

    emit(as_json, data, human)


def _setup(ctx: click.Context) -> dict[str, Any]:
    """What ``up`` does before serving: init if needed, import OPENAI_API_KEY if set."""
    from keyguard.domain.records import KeySpec
    from keyguard.wiring import create_vault, open_vault_if_present

    settings = settings_from(ctx)
    summary: dict[str, Any] = {
        "home": str(settings.home),
        "database_url": settings.safe_database_url,
    }
    vault = open_vault_if_present(settings, os.environ)
    if vault is None:
        path = settings.db_path
        if path is not None and path.exists():
            vault = open_vault(settings)  # exists but needs a prompt, or reports why it can't
        else:
            vault = create_vault(settings, os.environ, passphrase=prompt_passphrase)
            summary["created_vault"] = True
    try:
        summary["vault_id"] = vault.vault_id
        name = settings.upstream
        try:
            vault.get_upstream(name)
            summary["upstream"] = f"{name} (existing)"
        except KeyNotFound:
            value = os.environ.get("OPENAI_API_KEY")
            if value:
                secret = Secret(value, name="OPENAI_API_KEY")
                vault.add_upstream(name, secret, actor=actor(), source="cli")
                summary["upstream"] = f"{name} (imported OPENAI_API_KEY {secret.redacted})"
            else:
                summary["upstream"] = None
        if summary["upstream"] and not vault.list_keys():
            record, token = vault.create_key(KeySpec(name="local", upstream=name),
                                             actor=actor(), source="cli")
            summary["created_key"] = record.key_id
            summary["_token"] = token
    finally:
        vault.close()
    return summary


@click.command("up")
@click.option("--no-serve", is_flag=True, help="Set up, print what was done, and exit.")
@click.option("--host", help="Address to bind [default 127.0.0.1].")
@click.option("--port", type=int, help="Port [default 8787].")
@click.pass_context
def up_cmd(ctx: click.Context, no_serve: bool, host: str | None, port: int | None) -> None:
    """Set up on the embedded default (SQLite, no other service) and serve the gateway.

    Creates the home, master key file and vault when missing; imports OPENAI_API_KEY from the
    environment as upstream 'default' when set; creates a first virtual key 'local' (printed
    once); then runs 'keyguard serve'.
    """
    summary = _setup(ctx)
    token: Secret | None = summary.pop("_token", None)
    kv(summary)
    if summary.get("upstream") is None:
        click.echo("no upstream key yet: export OPENAI_API_KEY and run 'keyguard up' again, or "
                   "'keyguard upstream add default'", err=True)
    if token is not None:
        click.echo("virtual key 'local' (shown once; use it as OPENAI_API_KEY against the "
                   "gateway):", err=True)
        click.echo(token.reveal())
    if no_serve:
        return
    from keyguard.cli.serve_cmd import serve_cmd

    params = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    ctx.invoke(serve_cmd, **params)


@click.group("vault")
def vault() -> None:
    """Vault maintenance: status, key rotation, re-wrapping."""


@vault.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show where the vault is and how much it holds (opens it, so checks the master key)."""
    settings = settings_from(ctx)
    v = open_vault(settings)
    try:
        creds = v.list_upstreams()
        data = {"vault_id": v.vault_id, "database_url": settings.safe_database_url,
                "upstreams": len(creds), "virtual_keys": len(v.list_keys()),
                "audit_records": v.audit.verify().count}
    finally:
        v.close()
    warnings = compromised_warnings(creds)
    data["warnings"] = warnings

    def human() -> None:
        kv({k: val for k, val in data.items() if k != "warnings"})
        for line in warnings:
            click.echo(f"WARNING: {line}", err=True)

    emit(as_json, data, human)


@vault.command("rewrap")
@click.option("--new-kek", is_flag=True,
              help="First add a new key-encryption key, then re-wrap everything under it.")
@json_option
@click.pass_context
def rewrap(ctx: click.Context, new_kek: bool, as_json: bool) -> None:
    """Re-wrap every data key under the newest key-encryption key (no value is decrypted)."""
    v = open_vault(settings_from(ctx))
    try:
        kek_id = v.rotate_kek(rewrap=False, actor=actor(), source="cli") if new_kek else None
        changed = v.rewrap(actor=actor(), source="cli")
    finally:
        v.close()
    data = {"rewrapped": changed, "new_kek": kek_id}
    prefix = f"added key-encryption key {kek_id}; " if kek_id else ""
    emit(as_json, data, lambda: click.echo(f"{prefix}re-wrapped {changed} records"))


ENV_NEW_PASSPHRASE = "KEYGUARD_NEW_PASSPHRASE"


def _new_passphrase() -> str:
    """The passphrase to rotate to: ``KEYGUARD_NEW_PASSPHRASE`` (``KEYGUARD_PASSPHRASE`` is the
    current one, which opens the vault), else asked twice on the terminal."""
    value = os.environ.get(ENV_NEW_PASSPHRASE)
    if value is not None:
        if not value:
            raise ConfigError(f"{ENV_NEW_PASSPHRASE} is empty")
        return value
    if not sys.stdin.isatty():
        raise ConfigError(
            f"the new passphrase: set {ENV_NEW_PASSPHRASE} (KEYGUARD_PASSPHRASE is the current"
            " one) or run interactively"
        )
    return prompt_passphrase(True)


@vault.command("rotate-master")
@click.option("--to", "target", type=click.Choice(MASTER_SOURCES), default="file",
              show_default=True, help="Where the new master key lives.")
@click.pass_context
def rotate_master(ctx: click.Context, target: str) -> None:
    """Replace the master key: the key-encryption keys are re-wrapped under a new one.

    The new key is stored (key file written as master.key.new, keyring entry, or passphrase
    parameters) before the vault changes, so a crash at any point leaves a vault that opens.
    """
    from keyguard.crypto.master import MasterKey, ScryptParams
    from keyguard.crypto.sources import (
        ENV_MASTER_KEY,
        delete_from_os_keyring,
        key_file_path,
        read_os_keyring,
        store_in_os_keyring,
    )
    from keyguard.vault.vault import Vault
    from keyguard.wiring import install_new_key_file, pending_key_file, write_pending_key_file

    if os.environ.get(ENV_MASTER_KEY):
        raise ConfigError(f"{ENV_MASTER_KEY} is set: the master key is managed outside keyguard. "
                          "Unset it to rotate into a key file, the keyring or a passphrase.")
    settings = settings_from(ctx)
    v = open_vault(settings)
    old_file = key_file_path(settings.home, os.environ)
    try:
        # opened with the OS keyring's key (no key file, no passphrase parameters): that entry
        # is this vault's, and goes stale when the key moves elsewhere
        in_keyring = (
            not old_file.exists()
            and Vault.passphrase_params(v.store) is None
            and read_os_keyring() is not None
        )
        kdf = None
        if target == "file":
            new = MasterKey.generate()
            write_pending_key_file(old_file, new)
            v.rotate_master_key(new, actor=actor(), source="cli")
            install_new_key_file(old_file)
        else:
            if target == "passphrase":
                kdf = ScryptParams.new()
                new = kdf.derive(_new_passphrase())
            else:
                new = MasterKey.generate()
                store_in_os_keyring(new)
            v.rotate_master_key(new, kdf=kdf, actor=actor(), source="cli")
            if old_file.exists():
                old_file.unlink()  # it holds the old key, which no longer opens the vault
            pending_key_file(old_file).unlink(missing_ok=True)
        if in_keyring and target != "keyring":
            delete_from_os_keyring()  # the old key: it no longer opens anything
    finally:
        v.close()
    click.echo(f"master key rotated; it now lives in: {target}")
