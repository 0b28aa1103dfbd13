"""Upstream routes: the pinned origin, base path and ready-made auth headers per credential.

The vault is asked for an upstream's record and its CURRENT key at most once per
``credential_ttl`` seconds (default 2 s), so a rotation is picked up within that time while the
hot path does no storage access and no decryption. The base URL is re-checked here (https, or
http to loopback only with the explicit opt-in) even though the vault checks it on write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from keyguard.domain.records import Label, check_base_url
from keyguard.errors import ConfigError, KeyNotFound, UpstreamUnavailable, VaultError
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.headers import upstream_auth_lines
from keyguard.gateway.http.client import Origin
from keyguard.gateway.http.tls import upstream_context
from keyguard.gateway.ports import UpstreamProvider


@dataclass(frozen=True)
class UpstreamRoute:
    """Where and how to send requests for one upstream credential (holds the key's header)."""

    name: str
    origin: Origin
    host_header: bytes
    base_path: str
    auth_lines: bytes
    version: int
    expires: float

    def __repr__(self) -> str:  # never print the auth header
        return f"UpstreamRoute({self.name!r}, version={self.version})"


class CredentialCache:
    """Resolves upstream names to :class:`UpstreamRoute`, caching them briefly."""

    def __init__(self, provider: UpstreamProvider, config: GatewayConfig) -> None:
        self._provider = provider
        self._ttl = config.credential_ttl
        self._ssl = upstream_context(config.upstream_ca_bundle)
        self._routes: dict[str, UpstreamRoute] = {}

    def route(self, name: str) -> UpstreamRoute:
        r = self._routes.get(name)
        if r is not None and r.expires > time.monotonic():
            return r
        r = self._load(name)
        self._routes[name] = r
        return r

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._routes.clear()
        else:
            self._routes.pop(name, None)

    def _load(self, name: str) -> UpstreamRoute:
        try:
            up = self._provider.get_upstream(name)
            version, secret = self._provider.upstream_secret(name, Label.CURRENT, audit=False)
        except KeyNotFound:
            raise UpstreamUnavailable("no usable upstream credential for this key") from None
        except VaultError:
            raise UpstreamUnavailable("the upstream credential is not available") from None
        try:
            base_url = check_base_url(
                up.base_url, allow_insecure_loopback=up.allow_insecure_loopback
            )
        except ConfigError:
            raise UpstreamUnavailable(
                "the upstream is not configured for a verified TLS connection"
            ) from None
        parts = urlsplit(base_url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        default_port = port == (443 if scheme == "https" else 80)
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if default_port else f"{shown}:{port}"
        origin = Origin(scheme, host, port, self._ssl if scheme == "https" else None)
        return UpstreamRoute(
            name=name,
            origin=origin,
            host_header=host_header.encode("ascii"),
            base_path=parts.path.rstrip("/"),
            auth_lines=upstream_auth_lines(secret.reveal(), up.organization, up.project),
            version=version.version,
            expires=time.monotonic() + self._ttl,
        )
