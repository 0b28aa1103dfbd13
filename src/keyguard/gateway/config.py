"""The gateway's configuration: one frozen object, built at the edge and passed in.

The gateway never reads ``os.environ`` or settings files; ``keyguard serve`` (or a test) builds a
:class:`GatewayConfig` and hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keyguard.errors import ConfigError
from keyguard.gateway.http.framing import ServerLimits


@dataclass(frozen=True)
class GatewayConfig:
    """Everything ``serve`` needs besides the vault. Times in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    upstream_ca_bundle: Path | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    #: bytes of a multipart body buffered while looking for its ``model`` field
    max_multipart_prefix: int = 1024 * 1024
    #: JSON bodies up to this size are read to learn ``model`` even when the key allows any
    audit_json_sniff_limit: int = 256 * 1024
    upstream_connect_timeout: float = 10.0
    #: time to the upstream's response head, and the longest pause between body chunks
    upstream_timeout: float = 600.0
    upstream_idle_ttl: float = 30.0
    #: how long an upstream key (and its headers) is cached before the vault is asked again
    credential_ttl: float = 2.0
    #: how long a keep-alive connection may reuse its last authenticated key without a lookup
    #: (revocations reach such a connection within this; expiry is checked on every request)
    auth_cache_ttl: float = 0.25
    audit_interval: float = 0.05
    audit_batch_size: int = 256
    throttle_burst: int = 20
    throttle_rate: float = 0.2
    shutdown_grace: float = 10.0
    #: serve as the core behind the native edge (docs/edge.md): listen on this unix socket
    #: instead of host:port, and take the client's address from the edge's
    #: ``keyguard-edge-peer`` header (only the edge can connect: the socket is private)
    core_socket: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ConfigError("client_ca (mTLS) requires tls_cert and tls_key")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.workers > 1 and self.port == 0 and self.core_socket is None:
            raise ConfigError("workers > 1 needs a fixed port")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
