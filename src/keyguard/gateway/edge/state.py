"""What the native edge is told: its configuration, and snapshots of the keys and routes.

Both are plain dicts in the shape of ``native/edge/src/protocol.rs`` (``Config`` and ``State``),
written to the edge's stdin as one JSON line each. A snapshot holds secrets (the HMAC key of the
virtual-key digests and the upstream keys in their ``Authorization`` headers): it is built here,
serialised once, written to the pipe and never logged; its ``repr`` is never taken.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from keyguard.domain.pricing import PriceTable
from keyguard.domain.records import (
    KeySecretHash,
    Label,
    UpstreamCredential,
    VirtualKey,
    check_base_url,
)
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, KeyguardError
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.headers import upstream_auth_lines

log = logging.getLogger("keyguard.gateway.edge")


class EdgeVault(Protocol):
    """What the edge supervisor reads from the vault."""

    def key_verification_table(self) -> tuple[bytes, list[VirtualKey], list[KeySecretHash]]: ...

    def get_upstream(self, name: str) -> UpstreamCredential: ...

    def upstream_secret(
        self, name: str, label: Label | str = ..., *, audit: bool | None = ...
    ) -> tuple[Any, Secret]: ...


def edge_config(
    config: GatewayConfig, core_socket: Path, threads: int, prices: PriceTable | None = None
) -> dict[str, Any]:
    """The edge's ``Config`` line for a gateway configured as ``config``; ``prices`` (the
    effective table) lets the edge price the usage it reports."""
    lim = config.limits
    return {
        "type": "config",
        "host": config.host,
        "port": config.port,
        "threads": threads,
        "tls_cert": str(config.tls_cert) if config.tls_cert else None,
        "tls_key": str(config.tls_key) if config.tls_key else None,
        "client_ca": str(config.client_ca) if config.client_ca else None,
        "core_socket": str(core_socket),
        "upstream_ca_bundle": str(config.upstream_ca_bundle) if config.upstream_ca_bundle else None,
        "trusted_proxies": list(config.trusted_proxies),
        "max_header_bytes": lim.max_header_bytes,
        "max_headers": lim.max_headers,
        "max_body_bytes": lim.max_body_bytes,
        "header_timeout": lim.header_timeout,
        "keepalive_timeout": lim.keepalive_timeout,
        "body_timeout": lim.body_timeout,
        "upstream_timeout": config.upstream_timeout,
        "upstream_connect_timeout": config.upstream_connect_timeout,
        "upstream_idle_ttl": config.upstream_idle_ttl,
        "audit_json_sniff_limit": config.audit_json_sniff_limit,
        "throttle_burst": config.throttle_burst,
        "throttle_rate": config.throttle_rate,
        "shutdown_grace": config.shutdown_grace,
        "prices_json": json.dumps(prices.to_mapping()) if prices is not None else None,
    }


def _key_entry(key: VirtualKey, digests: list[KeySecretHash]) -> dict[str, Any] | None:
    try:
        _ = key.policy  # a stored policy that does not compile: the key is never usable
    except ConfigError:
        return None
    return {
        "id": key.key_id,
        "digests": [
            [d.digest.hex(), d.valid_until.timestamp() if d.valid_until else None] for d in digests
        ],
        "revoked": key.revoked_at is not None,
        "expires": key.expires_at.timestamp() if key.expires_at else None,
        "models": list(key.allowed_models),
        "endpoints": list(key.allowed_endpoints),
        "cidrs": list(key.allowed_cidrs),
        "upstream": key.upstream,
        "rpm": key.rpm,
        "max_concurrency": key.max_concurrency,
        # token and spend limits need the estimate before and the usage after each request,
        # kept by the core's limiter: such keys are always served by the core
        "core_only": key.tpm is not None or key.budget_usd is not None,
    }


def _route(vault: EdgeVault, name: str) -> dict[str, Any] | None:
    """The edge's route for upstream ``name`` (CURRENT key), or ``None`` when it has no usable
    one (the core then answers for its keys, with the error the client should get)."""
    try:
        up = vault.get_upstream(name)
        version, secret = vault.upstream_secret(name, Label.CURRENT, audit=False)
        base_url = check_base_url(up.base_url, allow_insecure_loopback=up.allow_insecure_loopback)
    except KeyguardError:
        return None
    parts = urlsplit(base_url)
    scheme = parts.scheme
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    default_port = port == (443 if scheme == "https" else 80)
    lines = upstream_auth_lines(secret.reveal(), up.organization, up.project)
    auth = []
    for line in lines.decode("ascii").split("\r\n"):
        if line:
            k, _, v = line.partition(": ")
            auth.append([k, v])
    previous = up.version_with(Label.PREVIOUS)
    return {
        "name": name,
        "scheme": scheme,
        "host": host,
        "port": port,
        "host_header": shown if default_port else f"{shown}:{port}",
        "base_path": parts.path.rstrip("/"),
        "auth": auth,
        "version": version.version,
        "fallback": previous is not None
        and previous.version != version.version
        and not previous.compromised,
    }


def build_state(
    vault: EdgeVault, generation: int, *, native_limits: bool
) -> tuple[dict[str, Any], list[VirtualKey]]:
    """A ``State`` snapshot — every key the vault holds and a route per upstream they use —
    and the keys it was built from."""
    server_key, keys, secrets = vault.key_verification_table()
    by_key: dict[str, list[KeySecretHash]] = {}
    for s in secrets:
        by_key.setdefault(s.key_id, []).append(s)
    entries = []
    upstreams: set[str] = set()
    for key in keys:
        entry = _key_entry(key, by_key.get(key.key_id, []))
        if entry is not None:
            entries.append(entry)
            if key.revoked_at is None:
                upstreams.add(key.upstream)
    routes = []
    for name in sorted(upstreams):
        route = _route(vault, name)
        if route is not None:
            routes.append(route)
    state = {
        "type": "state",
        "generation": generation,
        "server_key": server_key.hex(),
        "keys": entries,
        "routes": routes,
        "native_limits": native_limits,
    }
    return state, keys
