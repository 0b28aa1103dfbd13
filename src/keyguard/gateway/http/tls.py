"""TLS contexts: verified client side towards the upstream, optional server side (and mTLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

from keyguard.errors import ConfigError


def upstream_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """Verification always on: system trust store (or ``ca_bundle``), hostname check, TLS ≥ 1.2."""
    try:
        ctx = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH, cafile=str(ca_bundle) if ca_bundle else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream_ca_bundle: cannot load {ca_bundle}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS termination for clients; with ``client_ca`` every client must present a certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_cert/tls_key: cannot load the certificate or key") from exc
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"client_ca: cannot load {client_ca}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
