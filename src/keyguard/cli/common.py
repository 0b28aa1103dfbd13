"""What every CLI command shares: settings, opening the vault, reading secrets, output, exit codes.

Exit codes (the one table; documented in the README and ``keyguard --help``):

==== ==========================================================
0    success
1    findings (scan) or a failed verification (audit verify)
2    usage or input error, bad configuration
3    vault locked or decryption failure
4    not found
5    storage error
6    access denied
7    upstream error
==== ==========================================================
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click

from keyguard.domain.display import printable
from keyguard.domain.redaction import redact
from keyguard.domain.secret import Secret
from keyguard.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    KeyFormatError,
    KeyguardError,
    KeyNotFound,
    ScanError,
    StorageError,
    UpstreamError,
    VaultError,
)

if TYPE_CHECKING:
    from keyguard.config import Settings
    from keyguard.vault import Vault

#: error class -> exit code; first match wins (most specific first)
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (KeyNotFound, 4),
    (AlreadyExists, 2),
    (VaultError, 3),
    (StorageError, 5),
    (AccessDenied, 6),
    (UpstreamError, 7),
    (ConfigError, 2),
    (KeyFormatError, 2),
    (ScanError, 2),
    (KeyguardError, 2),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error, from :data:`EXIT_CODES`."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 2


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """Build settings from the root group's options plus this command's flags."""
    from keyguard.config import load_settings

    root = ctx.find_root().params
    overrides = {"home": root.get("home"), "database_url": root.get("database_url")}
    overrides.update(flags)
    return load_settings(overrides)


def open_vault(settings: Settings, *, create: bool = False) -> Vault:
    """Open (or with ``create``, create) the vault the settings point at."""
    from keyguard.wiring import create_vault
    from keyguard.wiring import open_vault as _open

    if create:
        return create_vault(settings, os.environ, passphrase=prompt_passphrase)
    return _open(settings, os.environ, passphrase=prompt_passphrase, source="cli")


def prompt_passphrase(confirm: bool = False) -> str:
    """Ask for the vault passphrase on the terminal (never echoed, never from argv)."""
    if not sys.stdin.isatty():
        raise ConfigError(
            "the vault is protected by a passphrase: set KEYGUARD_PASSPHRASE or run interactively"
        )
    value: str = click.prompt(
        "Vault passphrase", hide_input=True, confirmation_prompt=confirm, err=True
    )
    return value


def read_secret(
    *, from_env: str | None, from_stdin: bool, prompt: str, name: str | None = None
) -> Secret:
    """Read a secret from an environment variable, stdin, or a hidden prompt — never argv."""
    if from_env:
        value = os.environ.get(from_env, "")
        if not value:
            raise ConfigError(f"environment variable {from_env} is not set or empty")
    elif from_stdin or not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
        if not value:
            raise ConfigError("no secret on standard input")
    else:
        value = click.prompt(prompt, hide_input=True, err=True).strip()
    return Secret(value, name=name or from_env)


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON for scripts, or call ``human`` to render it for people."""
    if as_json:
        click.echo(redact(json.dumps(data, indent=2, sort_keys=True, default=str)))
    else:
        human()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Render a table with rich (plain text when not a terminal). Cells are literal text:
    never rich markup, and control characters are shown escaped (:func:`printable`) — audit
    fields such as a request path come from whoever sent the request."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not console.is_terminal:  # pipes and files get whole values, never "…"-truncated ones
        console = Console(highlight=False, width=1000)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for h in headers:
        t.add_column(h, overflow="fold")
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(str(v))) for v in row))
    console.print(t)


def kv(pairs: Mapping[str, Any]) -> None:
    """Render key/value lines."""
    width = max((len(k) for k in pairs), default=0)
    for k, v in pairs.items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v) or "(any)"
        click.echo(printable(f"{k.ljust(width)}  {'' if v is None else v}"))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, *, setting: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``24h``, ``30d``, ``2w`` (or combinations like ``1d12h``)."""
    import re

    parts = re.findall(r"(\d+)([smhdw])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ConfigError(f"invalid {setting} {text!r}: use e.g. 90s, 15m, 24h, 30d, 2w")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"invalid {setting} {text!r}: must be positive")
    return timedelta(seconds=seconds)


def parse_time(text: str, *, setting: str) -> datetime:
    """An ISO 8601 time; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        hint = "use ISO 8601, e.g. 2027-01-31T12:00"
        raise ConfigError(f"invalid {setting} {text!r}: {hint}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def expiry_from(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime | None:
    """The expiry of ``--expires-in D`` or ``--expires-at TIME`` (not both; not in the past)."""
    if expires_in and expires_at:
        raise ConfigError("give --expires-in or --expires-at, not both")
    if expires_in:
        return now + parse_duration(expires_in, setting="--expires-in")
    if not expires_at:
        return None
    expiry = parse_time(expires_at, setting="--expires-at")
    if expiry <= now:
        raise ConfigError("--expires-at is in the past")
    return expiry


def utcnow() -> datetime:
    """Now, UTC, aware."""
    return datetime.now(timezone.utc)


def actor() -> str:
    """Who is acting, for audit records: the OS user running the CLI."""
    from keyguard.wiring import os_actor

    return os_actor(os.environ)


def show_once(
    as_json: bool, data: Mapping[str, Any], field: str, secret: Secret, summary: str
) -> None:
    """The one place a new credential is printed whole (``emit`` would redact it): JSON with
    the value under ``field``, or ``summary`` then the value alone on the last line."""
    if as_json:
        click.echo(json.dumps({**data, field: secret.reveal()}, indent=2))
        return
    click.echo(summary)
    click.echo(f"This is the only time the {field} is shown; store it now:", err=True)
    click.echo(secret.reveal())
