"""``keyguard fix``: move hardcoded keys from files into ``.env`` (or the vault).

Exit codes: 0 every key was moved, 1 some places need a manual edit (guidance is printed),
2 error. With ``--dry-run`` nothing is written and the diff (keys redacted) is shown.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keyguard.domain.display import printable
from keyguard.errors import ConfigError

if TYPE_CHECKING:
    from keyguard.scanner.fix.fixer import FixResult, SecretSink


def _project_root(target: Path) -> Path:
    from keyguard.scanner.walk import git_toplevel

    top = git_toplevel(target)
    if top is not None:
        return top
    return target if target.is_dir() else target.parent


def _vault_sink(ctx: click.Context) -> SecretSink:
    """The vault behind the fixer's :class:`SecretSink` port (opened like any vault command)."""
    from keyguard.cli.common import actor, open_vault, settings_from
    from keyguard.scanner.vault_port import VaultSink

    vault = open_vault(settings_from(ctx))
    ctx.call_on_close(vault.close)
    return VaultSink(vault, actor=actor())


def _as_dict(result: FixResult) -> dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "env_file": result.env_file,
        "stored": result.stored,
        "planned_env": result.planned_env_lines,
        "planned_vault": result.planned_vault,
        "gitignore_updated": result.gitignore_updated,
        "files": [
            {
                "path": f.path,
                "rewritten": [{"line": line, "env": name} for line, name in f.replaced],
                "redacted_outputs": [
                    {"line": line, "cell": cell} for line, cell in f.redacted_outputs
                ],
                "guidance": f.guidance,
            }
            for f in result.files
        ],
    }


def _print_human(result: FixResult) -> None:
    # paths, diffs and guidance quote the scanned files: control characters are shown escaped
    for f in result.files:
        if result.dry_run and f.diff:
            click.echo("\n".join(printable(ln) for ln in f.diff.split("\n")), nl=False)
        for line, name in f.replaced:
            verb = "would read" if result.dry_run else "now reads"
            click.echo(printable(f"{f.path}:{line}: {verb} os.environ[{name!r}]"))
        for line, cell in f.redacted_outputs:
            what = f"cell {cell} output" if cell is not None else "output"
            verb = "would be redacted" if result.dry_run else "redacted"
            click.echo(printable(f"{f.path}:{line}: {what} {verb}; rotate this key"))
        for text in f.guidance:
            click.echo(printable(f"manual: {text}"))
    if result.dry_run:
        for entry in result.planned_env_lines:
            click.echo(printable(f"would append to {result.env_file}: {entry}"))
        for entry in result.planned_vault:
            click.echo(printable(f"would store in the keyguard vault: {entry}"))
        click.echo("dry run: nothing was written")
        return
    for stored in result.stored:
        click.echo(printable(f"stored {stored}"))
    if result.gitignore_updated:
        click.echo(printable(f"added {result.env_file} to .gitignore"))
    if result.files:
        click.echo(
            "These keys were in your files (and maybe in git history): rotate them. "
            "`keyguard scan --history` shows where they were committed."
        )


@click.command("fix")
@click.argument("path", type=click.Path(exists=True), default=".")
@click.option("--dry-run", is_flag=True, help="Show the diff (keys redacted); write nothing.")
@click.option("--env-file", type=click.Path(dir_okay=False), help="Where values go [ROOT/.env].")
@click.option("--to-vault", is_flag=True, help="Store values in the keyguard vault, not .env.")
@click.option("--no-ignore", is_flag=True, help="Also fix files .gitignore excludes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fix_cmd(
    ctx: click.Context,
    path: str,
    dry_run: bool,
    env_file: str | None,
    to_vault: bool,
    no_ignore: bool,
    as_json: bool,
) -> None:
    """Rewrite hardcoded keys in PATH to read the environment; store the values safely.

    Python files are rewritten (libcst; formatting and comments kept, `import os` added);
    a key in a notebook cell output is redacted there and not stored (rotate it);
    other files get exact instructions. Each value is stored in .env (mode 0600, added to
    .gitignore) or the vault before any source file changes; each file is replaced atomically.
    """
    try:
        from keyguard.scanner.fix.fixer import fix_findings
    except ModuleNotFoundError as exc:  # libcst is the optional "fix" extra
        if exc.name != "libcst":
            raise
        raise ConfigError("keyguard fix needs libcst: pip install libcst") from None
    from keyguard.scanner.runner import Scanner
    from keyguard.scanner.walk import list_files

    target = Path(path).resolve()
    root = _project_root(target)
    rels = [
        os.path.relpath(os.path.join(target, rel) if target.is_dir() else target, root)
        for rel in list_files(target, respect_ignore=not no_ignore)
    ]
    report = Scanner().scan_files(root, rels)
    sink = _vault_sink(ctx) if to_vault else None  # opened for --dry-run too: fail early
    result = fix_findings(
        root,
        report.findings,
        env_path=Path(env_file).resolve() if env_file else None,
        sink=sink,
        dry_run=dry_run,
    )
    if as_json:
        click.echo(json.dumps(_as_dict(result), indent=2))
    elif not report.findings:
        click.echo("no hardcoded keys found")
    else:
        _print_human(result)
    ctx.exit(1 if result.unfixed else 0)
