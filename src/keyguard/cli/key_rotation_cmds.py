"""``keyguard key rotate``: a new secret for the same virtual key id, with a grace window.

Registered onto the ``key`` group by :mod:`keyguard.cli.key_cmds`.
"""

from __future__ import annotations

import click

from keyguard.cli.common import actor, open_vault, settings_from, show_once, utcnow
from keyguard.cli.rotate_cmds import span
from keyguard.vault.views import iso


@click.command("rotate")
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True,
              help="How long the old key keeps working (0s: stops at once).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def rotate(ctx: click.Context, key_id: str, grace: str, as_json: bool) -> None:
    """Issue a new key for KEY_ID; scope, limits, budget and audit history stay with the id.
    The new key is printed once, here."""
    from keyguard.cli.key_usage_cmds import announce

    window = span(grace, setting="--grace")
    settings = settings_from(ctx)
    vault = open_vault(settings)
    try:
        record, token = vault.rotate_key(key_id, grace=window, actor=actor(), source="cli")
    finally:
        vault.close()
    announce(settings, "key.rotated", record.key_id)  # replicas reload at once (else: resync)
    until = iso(utcnow() + window)
    show_once(as_json, {"key_id": record.key_id, "name": record.name,
                        "old_key_valid_until": until}, "key", token,
              f"rotated virtual key {record.key_id} ({record.name!r}); the old key works until "
              f"{until}")


def register(group: click.Group) -> None:
    """Add ``rotate`` to the ``key`` group."""
    group.add_command(rotate)
