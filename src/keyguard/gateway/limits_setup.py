"""Wire limits and key events into a gateway worker (used by ``keyguard serve`` and tests).

:func:`limits_extension` returns a factory that each worker calls once, inside its event loop,
with its vault. It builds:

* with ``redis_url``: the shared Redis limiter (optionally with a per-replica in-process
  fallback, ``degrade``) and a key-event listener that refreshes this worker's authenticator
  the moment a revocation or rotation is published;
* without: the in-process limiter, its budgets persisted in the SQLite vault file.

The pieces come back as a :class:`GatewayExtension`: the vault to serve (wrapped so the
listener knows the authenticators it must refresh), the keyword arguments for
:class:`~keyguard.gateway.app.Gateway`, and ``aclose()`` for shutdown.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from keyguard.gateway.limits import Admission
from keyguard.gateway.ports import (
    AuditSink,
    Authenticator,
    StoreProbe,
    VaultLike,
)
from keyguard.limits.events import DEFAULT_CHANNEL, EventListener
from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter, spend_store_for
from keyguard.limits.prices import load_prices

log = logging.getLogger("keyguard.gateway.limits")


class EventedVault:
    """The vault as the gateway sees it, remembering the authenticators it hands out."""

    def __init__(self, vault: VaultLike) -> None:
        self._vault = vault
        self._auths: weakref.WeakSet[Any] = weakref.WeakSet()

    def authenticator(self) -> Authenticator:
        auth = self._vault.authenticator()
        self._auths.add(auth)
        return auth

    def refresh_all(self) -> None:
        """Reload every authenticator's snapshot now (a key changed somewhere)."""
        for auth in list(self._auths):
            refresh = getattr(auth, "refresh", None)
            if refresh is not None:
                refresh(force=True)

    @property
    def audit(self) -> AuditSink:
        return self._vault.audit

    @property
    def store(self) -> StoreProbe:
        return self._vault.store

    def get_upstream(self, name: str) -> Any:
        return self._vault.get_upstream(name)

    def upstream_secret(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._vault.upstream_secret(name, *args, **kwargs)

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        self._vault.touch_keys(last_used)

    def __getattr__(self, name: str) -> Any:  # anything else the gateway may ask the vault
        return getattr(self._vault, name)


@dataclass
class GatewayExtension:
    """What :func:`limits_extension` adds to one gateway worker."""

    vault: VaultLike
    admission: Admission
    listener: EventListener | None = None
    gateway_kwargs: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.admission.aclose()


def limits_extension(
    *,
    redis_url: str | None,
    prices_file: Path | None = None,
    degrade: bool = False,
    prefix: str = "kg:",
    channel: str = DEFAULT_CHANNEL,
) -> Callable[[VaultLike], GatewayExtension]:
    """A per-worker factory of limits + events (see the module docstring)."""
    prices = load_prices(prices_file)  # a bad override fails at start-up, not per request

    def build(vault: VaultLike) -> GatewayExtension:
        if redis_url is None:
            limiter = MemoryLimiter(spend_store_for(vault.store)).start()
            admission = Admission(AsyncMemoryLimiter(limiter), prices)
            return GatewayExtension(vault, admission, None, {"limits": admission})
        from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async
        from keyguard.limits.redis_sync import connect

        fallback = AsyncMemoryLimiter(MemoryLimiter()) if degrade else None
        admission = Admission(
            AsyncRedisLimiter(connect_async(redis_url), prefix=prefix), prices, fallback=fallback
        )
        evented = EventedVault(vault)
        listener = EventListener(
            lambda: connect(redis_url),
            on_event=lambda _event: evented.refresh_all(),
            on_resync=evented.refresh_all,
            channel=channel,
        ).start()
        return GatewayExtension(evented, admission, listener, {"limits": admission})

    return build


__all__ = ["EventedVault", "GatewayExtension", "limits_extension"]
