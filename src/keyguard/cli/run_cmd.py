"""``keyguard run -- CMD``: run a program with the API key in its environment, not in argv."""

from __future__ import annotations

import os
import shutil

import click

from keyguard.errors import ConfigError
from keyguard.loading import DEFAULT_SOURCES, load_api_key

#: removed from the program's environment: each one opens every secret in the vault
VAULT_UNLOCK_VARS = ("KEYGUARD_MASTER_KEY", "KEYGUARD_PASSPHRASE")


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--name",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Variable to load and to set in the program's environment.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(DEFAULT_SOURCES),
    help="Key source to try, in order (repeatable; default: all).",
)
@click.option(
    "--upstream",
    default="default",
    show_default=True,
    help="Vault upstream credential to use for the vault source.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(name: str, sources: tuple[str, ...], upstream: str, command: tuple[str, ...]) -> None:
    """Run COMMAND with the key loaded safely and exported as NAME.

    The key is validated first and never appears on the command line; KEYGUARD_MASTER_KEY and
    KEYGUARD_PASSPHRASE are not passed on. Use ``--`` before a
    command that has options of its own: ``keyguard run -- python app.py --debug``.
    """
    secret = load_api_key(name, sources=sources or DEFAULT_SOURCES, upstream=upstream)
    program = shutil.which(command[0])
    if program is None:
        raise ConfigError(f"command not found: {command[0]}")
    # the program gets the one key, never what unlocks the whole vault
    env = {k: v for k, v in os.environ.items() if k not in VAULT_UNLOCK_VARS}
    env[name] = secret.reveal()
    # replaces this process, so signals and the exit code pass straight through
    try:
        os.execve(program, list(command), env)  # noqa: S606
    except OSError as exc:  # not an executable format, no permission, ...
        raise ConfigError(f"cannot run {program}: {exc.strerror}") from None
