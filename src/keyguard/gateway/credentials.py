"""Upstream routes: the pinned origin, base path and ready-made auth headers per credential.

The vault is asked for an upstream's record and its CURRENT key at most once per
``credential_ttl`` seconds (default 2 s), so a rotation is picked up within that time while the
hot path does no storage access and no decryption. The base URL is re-checked here (https, or
http to loopback only with the explicit opt-in) even though the vault checks it on write.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("keyguard.gateway")


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
    #: the version is marked compromised (leaked): never used as a fallback
    compromised: bool = False

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

    def fallback(self, name: str, failed_version: int) -> UpstreamRoute | None:
        """The PREVIOUS key's route, after the upstream answered 401 for CURRENT version
        ``failed_version``; ``None`` when there is no other valid version. A PREVIOUS version
        marked compromised is never used: the client gets the 401 instead of a request sent
        with a leaked key. Each fallback is an alert: a warning in the log and an audit record
        (the PREVIOUS key's audited reveal, plus ``upstream.fallback`` when the provider
        records alerts). Cached like :meth:`route`."""
        key = f"{name}\x00PREVIOUS"
        r = self._routes.get(key)
        if r is not None and r.expires > time.monotonic():
            return r if r.version != failed_version and not r.compromised else None
        try:
            r = self._load(name, Label.PREVIOUS)
        except UpstreamUnavailable:
            return None
        self._routes[key] = r
        if r.version == failed_version:
            return None
        if r.compromised:
            log.warning(
                "upstream %r refused CURRENT version %d with 401; PREVIOUS version %d is marked"
                " compromised and is not used",
                name,
                failed_version,
                r.version,
            )
            return None
        log.warning(
            "ALERT: upstream %r refused CURRENT version %d with 401; using PREVIOUS version %d",
            name,
            failed_version,
            r.version,
        )
        alert = getattr(self._provider, "record_upstream_fallback", None)
        if alert is not None:
            try:
                alert(name, failed_version, r.version)
            except Exception as exc:  # the alert must never break the request
                log.warning("could not audit the upstream fallback: %s", type(exc).__name__)
        return r

    def _load(self, name: str, label: Label = Label.CURRENT) -> UpstreamRoute:
        try:
            up = self._provider.get_upstream(name)
            audit = label is not Label.CURRENT  # a fallback reveal is audited
            version, secret = self._provider.upstream_secret(name, label, audit=audit)
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
            compromised=version.compromised,
        )
