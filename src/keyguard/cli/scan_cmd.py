"""``keyguard scan``: find hardcoded OpenAI and keyguard keys in files, the index or history.

Exit codes: 0 no findings (or all baselined/allowed), 1 findings, 2 error (bad path, not a git
repository, unreadable baseline, ...; raised as ``ScanError`` and mapped by the root group).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from keyguard.errors import ScanError

if TYPE_CHECKING:
    from keyguard.scanner.managed import ManagedKeys
    from keyguard.scanner.model import ScanReport
    from keyguard.scanner.runner import Scanner

#: verify.DEFAULT_BASE_URL, repeated so that a plain scan does not import ssl and urllib
#: (tests/scanner/test_cli.py keeps the two equal)
DEFAULT_VERIFY_BASE_URL = "https://api.openai.com/v1"


def _scan_paths(scanner: Scanner, paths: tuple[str, ...], respect_ignore: bool) -> ScanReport:
    from keyguard.scanner.walk import list_files

    display: list[str] = []
    for raw in paths:
        base = Path(raw)
        rels = list_files(base, respect_ignore=respect_ignore)
        if not rels and respect_ignore and base.is_dir() and any(base.iterdir()):
            click.echo(
                f"note: every file under {raw} is git-ignored (--no-ignore scans them)", err=True
            )
        if base.is_file():
            display.append(os.path.normpath(raw))
        else:
            prefix = os.path.normpath(raw)
            display.extend(rels if prefix == "." else (os.path.join(prefix, r) for r in rels))
    return scanner.scan_files(Path("."), list(dict.fromkeys(display)))


def _scan_stdin(scanner: Scanner) -> ScanReport:
    # counted like a file (binary input is skipped, not scanned); stdin has no size limit
    data = sys.stdin.buffer.read()
    return scanner.scan_blobs([("<stdin>", data)], "stdin", size_limit=False)


def _managed_keys(ctx: click.Context, *, revoke: bool) -> ManagedKeys | None:
    """The vault behind the scanner's :class:`ManagedKeys` port.

    For annotation the vault is used only if it opens without a prompt (pre-commit must never
    block on one) and any vault problem just skips the annotation; ``--revoke-managed`` opens
    it like every vault command (passphrase prompt, errors are errors).
    """
    from keyguard.cli.common import open_vault, settings_from
    from keyguard.errors import KeyguardError
    from keyguard.wiring import open_vault_if_present

    settings = settings_from(ctx)
    if revoke:
        vault = open_vault(settings)
    else:
        try:
            found = open_vault_if_present(settings, os.environ)
        except KeyguardError as exc:
            click.echo(f"note: managed-key lookup skipped ({exc})", err=True)
            return None
        if found is None:
            return None
        vault = found
    ctx.call_on_close(vault.close)

    def emergency(name: str) -> str:
        from keyguard.cli.common import actor
        from keyguard.cli.rotate_cmds import connector
        from keyguard.rotation.manual import emergency_revoke

        result = emergency_revoke(vault, name, connector(settings), actor=actor(), source="scan")
        return (
            f"emergency rotation of {name!r}: version {result.revoked_version} revoked, "
            f"version {result.new_version} is CURRENT"
        )

    from keyguard.scanner.vault_port import VaultManagedKeys  # only once a vault is open

    return VaultManagedKeys(vault, emergency=emergency)


def _update_baseline(report: ScanReport, path: Path) -> None:
    """Record the current findings (keeping the baseline's salt)."""
    from keyguard.scanner import baseline as baseline_mod

    known = baseline_mod.load(path) if path.exists() else baseline_mod.Baseline()
    fresh = baseline_mod.Baseline(salt=known.salt)
    fresh.add(report.findings)
    baseline_mod.save(fresh, path)
    click.echo(f"baseline {path}: {len(fresh.entries)} finding(s) recorded", err=True)


def _apply_baseline(report: ScanReport, path: Path) -> None:
    """Drop the findings the baseline knows; count them."""
    from keyguard.scanner import baseline as baseline_mod

    known = baseline_mod.load(path)
    kept = [f for f in report.findings if not known.knows(f)]
    report.baselined = len(report.findings) - len(kept)
    report.findings = kept


def _enrich(
    ctx: click.Context, report: ScanReport, *, revoke: bool, verify_url: str | None
) -> None:
    """Say which keys keyguard manages (and revoke them), and which are live."""
    keys = _managed_keys(ctx, revoke=revoke)
    if keys is not None:
        from keyguard.cli.common import actor
        from keyguard.scanner import managed

        report.findings = (
            managed.revoke_all(report.findings, keys, actor=actor())
            if revoke
            else managed.annotate(report.findings, keys)
        )
    if verify_url is not None:
        from keyguard.scanner.verify import Verifier

        report.findings = Verifier(verify_url).annotate(report.findings)


def _render(report: ScanReport, fmt: str, out: IO[str], color: bool) -> None:
    if fmt == "json":
        from keyguard.scanner.reporters import render_json

        render_json(report, out)
    elif fmt == "sarif":
        from keyguard.scanner.sarif import render_sarif

        render_sarif(report, out)
    else:
        from keyguard.scanner.reporters import render_text

        render_text(report, out, color=color)


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--staged", is_flag=True, help="Scan the git index (what the next commit holds).")
@click.option("--history", is_flag=True, help="Scan every commit reachable from any ref.")
@click.option("--no-ignore", is_flag=True, help="Also scan files .gitignore excludes.")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--sarif", "fmt", flag_value="sarif", help="Print SARIF 2.1.0.")
@click.option("--text", "fmt", flag_value="text", default=True, help="Print text (default).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report here.")
@click.option("--baseline", type=click.Path(dir_okay=False), help="Known findings to ignore.")
@click.option("--update-baseline", is_flag=True, help="Write current findings to --baseline.")
@click.option("--verify", is_flag=True, help="Ask the upstream whether each key is live.")
@click.option(
    "--verify-base-url",
    default=DEFAULT_VERIFY_BASE_URL,
    show_default=True,
    envvar="KEYGUARD_VERIFY_BASE_URL",
    help="Upstream for --verify.",
)
@click.option(
    "--revoke-managed",
    is_flag=True,
    help="Revoke found virtual keys; rotate (admin key) or flag found upstream keys.",
)
@click.option(
    "--max-file-size",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Skip files larger than this many MiB.",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes [CPU count].")
@click.option("--color/--no-color", default=None, help="Colour text output [on a TTY].")
@click.pass_context
def scan_cmd(
    ctx: click.Context,
    paths: tuple[str, ...],
    staged: bool,
    history: bool,
    no_ignore: bool,
    fmt: str,
    output: str | None,
    baseline: str | None,
    update_baseline: bool,
    verify: bool,
    verify_base_url: str,
    revoke_managed: bool,
    max_file_size: int,
    jobs: int | None,
    color: bool | None,
) -> None:
    """Find hardcoded OpenAI and keyguard keys. PATHS default to '.'; '-' reads stdin.

    Keys are never printed: each finding shows a redacted form and a fingerprint.
    Exit codes: 0 clean, 1 findings, 2 error.
    """
    # imports stay local and minimal: a clean pre-commit run should cost milliseconds
    from keyguard.scanner.runner import Scanner

    if staged and history:
        raise ScanError("--staged and --history cannot be combined")
    if update_baseline and not baseline:
        raise ScanError("--update-baseline needs --baseline FILE")
    scanner = Scanner(max_file_size=max_file_size * 1024 * 1024, jobs=jobs)
    targets = paths or (".",)
    if staged:
        from keyguard.scanner.gitsrc import scan_staged

        report = scan_staged(scanner, Path(targets[0]))
    elif history:
        from keyguard.scanner.gitsrc import scan_history

        report = scan_history(scanner, Path(targets[0]))
    elif targets == ("-",):
        report = _scan_stdin(scanner)
    else:
        report = _scan_paths(scanner, targets, respect_ignore=not no_ignore)

    if baseline and update_baseline:
        _update_baseline(report, Path(baseline))
        return
    if baseline:
        _apply_baseline(report, Path(baseline))
    if report.findings:
        _enrich(ctx, report, revoke=revoke_managed, verify_url=verify_base_url if verify else None)

    if output:
        with open(output, "w", encoding="utf-8") as fh:
            _render(report, fmt, fh, color=False)
    else:
        out = sys.stdout
        use_color = color if color is not None else (fmt == "text" and out.isatty())
        _render(report, fmt, out, color=bool(use_color))
    ctx.exit(1 if report.findings else 0)
