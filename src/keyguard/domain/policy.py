"""Access policy of a virtual key: state (revoked, expired), client IP, endpoint and model.

Pure and fast: each key's allowlists are compiled once (:func:`compile_policy`, cached on the
:class:`~keyguard.domain.records.VirtualKey` as ``key.policy``); :func:`check_request` runs per
gateway request with ``now`` passed in. An empty allowlist allows everything.

* models: exact names and fnmatch-style globs (``gpt-4o*``), case-sensitive. A request that names
  no model (``model=None``, e.g. ``GET /v1/models``) passes the model check: restrict endpoints
  to keep a key away from model-less endpoints.
* endpoints: request paths (no query string), exact or globs (``/v1/files*``). When endpoints are
  restricted, paths with empty, ``.`` or ``..`` segments are refused, so a glob can't be escaped.
* CIDRs: IPv4 and IPv6 networks; an IPv4-mapped IPv6 client (``::ffff:10.0.0.1``) is checked as
  its IPv4 address.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

from keyguard.errors import ConfigError, Forbidden, Unauthenticated

if TYPE_CHECKING:
    from keyguard.domain.records import VirtualKey

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_GLOB_CHARS = frozenset("*?[")
_MAX_SHOWN = 80


@dataclass(frozen=True)
class _Matcher:
    """Exact names in a set, globs folded into one regex; ``allow_all`` when the list is empty."""

    allow_all: bool
    exact: frozenset[str]
    pattern: re.Pattern[str] | None

    @classmethod
    def build(cls, kind: str, values: Sequence[str]) -> _Matcher:
        exact = set()
        globs = []
        for value in values:
            if not value or any(ord(c) < 33 for c in value):
                raise ConfigError(f"{kind}: {value!r} is not a valid pattern")
            if _GLOB_CHARS.intersection(value):
                globs.append(fnmatch.translate(value))
            else:
                exact.add(value)
        pattern = re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None
        return cls(allow_all=not values, exact=frozenset(exact), pattern=pattern)

    def allows(self, value: str) -> bool:
        if self.allow_all or value in self.exact:
            return True
        return self.pattern is not None and self.pattern.match(value) is not None


@dataclass(frozen=True)
class CompiledPolicy:
    """A key's allowlists in a form that is cheap to check per request."""

    models: _Matcher
    endpoints: _Matcher
    networks_v4: tuple[ipaddress.IPv4Network, ...]
    networks_v6: tuple[ipaddress.IPv6Network, ...]
    any_ip: bool

    def allows_ip(self, ip: IPAddress) -> bool:
        """True when ``ip`` (IPv4-mapped IPv6 normalised) is inside an allowed network."""
        if self.any_ip:
            return True
        ip = normalise_ip(ip)
        if isinstance(ip, ipaddress.IPv4Address):
            return any(ip in net for net in self.networks_v4)
        return any(ip in net for net in self.networks_v6)


def normalise_ip(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address becomes the IPv4 address it carries."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(f"allowed_cidrs: {value!r} is not a valid IP network") from exc
    if isinstance(net, ipaddress.IPv6Network):
        mapped = net.network_address.ipv4_mapped
        if mapped is not None and net.prefixlen >= 96:  # ::ffff:a.b.c.d/n means a.b.c.d/(n-96)
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    return net


def compile_policy(
    models: Sequence[str], endpoints: Sequence[str], cidrs: Sequence[str]
) -> CompiledPolicy:
    """Compile allowlists once; raises :class:`ConfigError` naming the bad entry."""
    nets = [_network(c) for c in cidrs]
    return CompiledPolicy(
        models=_Matcher.build("allowed_models", models),
        endpoints=_Matcher.build("allowed_endpoints", endpoints),
        networks_v4=tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
        networks_v6=tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network)),
        any_ip=not nets,
    )


def _shown(value: str) -> str:
    value = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "…"
    return repr(value)


def _clean_path(path: str) -> bool:
    if not path.startswith("/"):
        return False
    segments = path[1:].split("/")
    return all(seg not in ("", ".", "..") for seg in segments[:-1]) and segments[-1] not in (
        ".",
        "..",
    )


def check_key_state(key: VirtualKey, *, now: datetime) -> None:
    """Raise :class:`Unauthenticated` when the key is revoked or expired at ``now``."""
    if key.revoked_at is not None:
        raise Unauthenticated("API key revoked", code="revoked_api_key")
    if key.expires_at is not None and now >= key.expires_at:
        raise Unauthenticated("API key expired", code="expired_api_key")


def check_request(
    key: VirtualKey,
    *,
    now: datetime,
    client_ip: IPAddress,
    path: str,
    model: str | None,
) -> None:
    """Decide whether ``key`` may make this request; return ``None`` or raise.

    :class:`Unauthenticated` for a revoked or expired key; :class:`Forbidden` naming the client
    address, endpoint or model that is not allowed (and the key id, never key material).
    """
    check_key_state(key, now=now)
    policy = key.policy
    if not policy.allows_ip(client_ip):
        raise Forbidden(
            f"client address {normalise_ip(client_ip)} is not allowed for key {key.key_id}",
            code="ip_not_allowed",
        )
    if not policy.endpoints.allow_all and (
        not _clean_path(path) or not policy.endpoints.allows(path)
    ):
        raise Forbidden(
            f"endpoint {_shown(path)} is not allowed for key {key.key_id}",
            code="endpoint_not_allowed",
        )
    if model is not None and not policy.models.allows(model):
        raise Forbidden(
            f"model {_shown(model)} is not allowed for key {key.key_id}",
            code="model_not_allowed",
        )
