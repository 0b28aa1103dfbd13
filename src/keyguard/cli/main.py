"""Entry point of the ``keyguard`` command.

Subcommands are loaded lazily (only the one being run is imported) so that ``keyguard --help``
stays fast; each lives in its own module under ``keyguard.cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

#: command name -> "module:attribute"; the one table of subcommands
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("keyguard.cli.vault_cmds:init_cmd", "Create the keyguard home, master key and vault."),
    "up": ("keyguard.cli.vault_cmds:up_cmd", "Set up on the embedded default and serve."),
    "upstream": ("keyguard.cli.upstream_cmds:upstream", "Manage upstream (OpenAI) credentials."),
    "key": ("keyguard.cli.key_cmds:key", "Manage virtual keys."),
    "audit": ("keyguard.cli.audit_cmds:audit", "List and verify the audit log."),
    "admin-token": ("keyguard.cli.admin_cmds:admin_token", "Manage admin API tokens."),
    "vault": ("keyguard.cli.vault_cmds:vault", "Vault maintenance: rewrap, master key rotation."),
    "rotate": ("keyguard.cli.rotate_cmds:rotate_cmd", "Rotate keys that are due, or resume."),
    "run": ("keyguard.cli.run_cmd:run_cmd", "Run a command with the key in its environment."),
    "serve": ("keyguard.cli.serve_cmd:serve_cmd", "Serve the OpenAI-compatible gateway."),
    "scan": ("keyguard.cli.scan_cmd:scan_cmd", "Find hardcoded OpenAI and keyguard keys."),
    "fix": ("keyguard.cli.fix_cmd:fix_cmd", "Move hardcoded keys into the environment or vault."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("keyguard.cli"):
                return None  # command not built yet
            raise
        command: click.Command = getattr(module, attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from keyguard.errors import KeyguardError

        try:
            return super().invoke(ctx)
        except KeyguardError as exc:  # the one place errors become exit codes
            from keyguard.cli.common import exit_code_for
            from keyguard.domain.redaction import redact

            click.echo(f"error: {redact(str(exc))}", err=True)
            ctx.exit(exit_code_for(exc))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # help from the table, so --help imports nothing
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keyguard")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    help="keyguard home directory [env KEYGUARD_HOME; default ~/.keyguard].",
)
@click.option(
    "--database-url",
    help="sqlite:///path or postgresql://... [env KEYGUARD_DATABASE_URL; default: in the home].",
)
def cli(home: str | None, database_url: str | None) -> None:
    """keyguard: keep OpenAI API keys out of code, logs and clients.

    Exit codes: 0 success, 1 findings or verification failure, 2 usage or input error,
    3 vault locked or decryption failure, 4 not found, 5 storage error, 6 access denied,
    7 upstream error.
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="keyguard")
