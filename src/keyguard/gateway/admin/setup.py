"""Wiring the admin API into gateway workers (``keyguard serve``) and tests.

:func:`admin_api` builds an :class:`~keyguard.gateway.admin.api.AdminApi` for one vault;
:func:`with_admin` wraps a worker extension factory (e.g. ``limits_extension(...)``) so every
worker's gateway also gets ``admin=`` in its keyword arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from keyguard.domain.records import UpstreamCredential
from keyguard.errors import KeyguardError
from keyguard.gateway.admin.api import AdminApi, admin_networks
from keyguard.gateway.admin.handlers import Announce, Services
from keyguard.gateway.ports import VaultLike
from keyguard.rotation.admin_api import Endpoint, tls_context
from keyguard.rotation.upstream import Connect
from keyguard.vault.vault import Vault

log = logging.getLogger("keyguard.gateway.admin")


def connector(ca_bundle: Path | None) -> Connect:
    """Endpoint factory for upstream rotation: the credential's base URL, TLS verified against
    the system store or ``ca_bundle``."""
    ctx = tls_context(ca_bundle)

    def connect(cred: UpstreamCredential) -> Endpoint:
        return Endpoint(
            cred.base_url, ssl_context=ctx, allow_insecure_loopback=cred.allow_insecure_loopback
        )

    return connect


def redis_announcer(redis_url: str) -> Announce:
    """Publish key changes on Redis (best effort: replicas also resync by themselves)."""
    from keyguard.limits.events import KeyEvents
    from keyguard.limits.redis_sync import connect

    events = KeyEvents(connect(redis_url))

    def announce(kind: str, subject: str) -> None:
        try:
            events.publish(kind, subject)
        except KeyguardError as exc:
            log.warning("could not announce %s on Redis: %s", kind, type(exc).__name__)

    return announce


def admin_api(
    vault: VaultLike | Vault,
    *,
    upstream_ca_bundle: Path | None = None,
    allowed_cidrs: Sequence[str] = (),
    redis_url: str | None = None,
) -> AdminApi:
    """An admin API over ``vault`` (the full :class:`~keyguard.vault.Vault`)."""
    services = Services(
        connect=connector(upstream_ca_bundle),
        announce=redis_announcer(redis_url) if redis_url else None,
    )
    return AdminApi(cast(Vault, vault), services, allowed_cidrs=allowed_cidrs)


def with_admin(
    extension: Callable[[VaultLike], Any],
    *,
    upstream_ca_bundle: Path | None = None,
    allowed_cidrs: Sequence[str] = (),
    redis_url: str | None = None,
) -> Callable[[VaultLike], Any]:
    """Wrap a per-worker extension factory so each worker's gateway serves ``/admin/`` too.
    A bad ``allowed_cidrs`` fails here, before any worker starts."""
    admin_networks(allowed_cidrs)

    def build(vault: VaultLike) -> Any:
        ext = extension(vault)
        ext.gateway_kwargs["admin"] = admin_api(
            vault,
            upstream_ca_bundle=upstream_ca_bundle,
            allowed_cidrs=allowed_cidrs,
            redis_url=redis_url,
        )
        return ext

    return build
