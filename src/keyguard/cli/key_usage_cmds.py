"""``keyguard key usage ID``, and announcing key changes to running gateways.

With ``redis_url`` set, usage comes from the shared Redis counters (what every replica
enforces). Without it, the budget spent comes from the vault's SQLite file, where the
in-process limiter persists it every few seconds; its per-minute counters live only in the
running gateway and are not shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from keyguard.cli.common import emit, json_option, kv, open_vault, settings_from, utcnow
from keyguard.config import Settings
from keyguard.domain.limits import Limits, Usage, period_bounds, period_id
from keyguard.domain.pricing import nano_to_usd
from keyguard.domain.records import VirtualKey
from keyguard.errors import KeyguardError
from keyguard.vault.views import usage_dict


def announce(settings: Settings, kind: str, subject: str) -> None:
    """Publish a key change to every gateway replica (best effort: they also resync)."""
    if not settings.redis_url:
        return
    from keyguard.limits.events import KeyEvents
    from keyguard.limits.redis_sync import connect

    client = connect(settings.redis_url)
    try:
        KeyEvents(client).publish(kind, subject)
    except KeyguardError:
        click.echo(
            "warning: could not notify gateways through Redis; they will pick the change up "
            "on their next resync (a few seconds)",
            err=True,
        )
    finally:
        client.close()


def _usage(settings: Settings, vault: Any, key: VirtualKey, now: datetime) -> tuple[Usage, str]:
    limits = Limits.of(key)
    if settings.redis_url:
        from keyguard.limits.redis_sync import RedisLimiter, connect

        limiter = RedisLimiter(connect(settings.redis_url))
        try:
            return limiter.usage(key.key_id, limits, now), "redis"
        finally:
            limiter.close()
    from keyguard.limits.memory import spend_store_for

    period = period_id(limits.period, now)
    spend = spend_store_for(vault.store)
    spent = spend.spend_of(key.key_id).get(period, 0) if spend is not None else 0
    start, end = period_bounds(limits.period, now)
    budget = key.budget_usd
    return Usage(key.key_id, -1, -1, -1, period, nano_to_usd(spent), 0.0, budget, start, end), (
        "in-process"
    )



def register(group: click.Group) -> None:
    """Add ``usage`` to the ``key`` group."""

    @group.command("usage")
    @click.argument("key_id")
    @json_option
    @click.pass_context
    def usage(ctx: click.Context, key_id: str, as_json: bool) -> None:
        """Show a key's spend this budget period and its live rate counters."""
        settings = settings_from(ctx)
        vault = open_vault(settings)
        try:
            record = vault.get_key(key_id)
            u, backend = _usage(settings, vault, record, utcnow())
        finally:
            vault.close()
        data = usage_dict(record, u, backend)

        def human() -> None:
            shown = {k: ("n/a (counted inside the running gateway)" if v is None and k in (
                "requests_last_minute", "tokens_last_minute", "in_flight") else v)
                for k, v in data.items()}
            kv(shown)

        emit(as_json, data, human)
