"""``keyguard serve``: run the OpenAI-compatible gateway.

Settings shared with the rest of keyguard (host, port, workers, TLS, trusted proxies, upstream CA
bundle) follow the usual precedence (flag > ``KEYGUARD_*`` > keyguard.toml > default) through
:func:`keyguard.cli.common.settings_from`; the gateway-only limits are flags with their own
``KEYGUARD_*`` environment variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keyguard.cli.common import open_vault, settings_from

_PATH = click.Path(dir_okay=False, path_type=Path)


def gateway_config(settings: Any, **limits: Any) -> Any:
    """Build the gateway's :class:`~keyguard.gateway.config.GatewayConfig` from settings."""
    from keyguard.gateway.config import GatewayConfig
    from keyguard.gateway.http.framing import ServerLimits

    server_limits = ServerLimits(
        max_header_bytes=limits["max_header_bytes"],
        max_body_bytes=limits["max_body_mb"] * 1024 * 1024,
        header_timeout=limits["header_timeout"],
        keepalive_timeout=limits["keepalive_timeout"],
        body_timeout=limits["body_timeout"],
    )
    return GatewayConfig(
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        client_ca=settings.client_ca,
        trusted_proxies=tuple(settings.trusted_proxies),
        upstream_ca_bundle=settings.upstream_ca_bundle,
        limits=server_limits,
        upstream_timeout=limits["upstream_timeout"],
        upstream_connect_timeout=limits["connect_timeout"],
    )


@click.command("serve")
@click.option(
    "--host", help="Address to bind; '::' for all IPv4+IPv6. [default 127.0.0.1; env KEYGUARD_HOST]"
)
@click.option("--port", type=int, help="Port. [default 8787; env KEYGUARD_PORT]")
@click.option(
    "--workers",
    type=int,
    help="Worker processes sharing the port (SO_REUSEPORT). [default 1; env KEYGUARD_WORKERS]",
)
@click.option(
    "--tls-cert",
    type=_PATH,
    help="Serve HTTPS with this certificate chain (PEM). [env KEYGUARD_TLS_CERT]",
)
@click.option("--tls-key", type=_PATH, help="Private key for --tls-cert. [env KEYGUARD_TLS_KEY]")
@click.option(
    "--client-ca",
    type=_PATH,
    help="Require client certificates signed by this CA (mTLS). [env KEYGUARD_CLIENT_CA]",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="A reverse proxy whose X-Forwarded-For/Forwarded is believed (repeatable). "
    "[env KEYGUARD_TRUSTED_PROXIES, comma-separated]",
)
@click.option(
    "--admin-cidr",
    "admin_cidrs",
    multiple=True,
    metavar="CIDR",
    help="Only these client networks may reach the admin API under /admin/ (repeatable; "
    "default: any, admin tokens are always required). [env KEYGUARD_ADMIN_CIDRS, comma-separated]",
)
@click.option(
    "--upstream-ca-bundle",
    type=_PATH,
    help="Verify upstreams against this CA bundle instead of the system store. "
    "[env KEYGUARD_UPSTREAM_CA_BUNDLE]",
)
@click.option(
    "--max-body-mb",
    type=int,
    default=64,
    show_default=True,
    envvar="KEYGUARD_MAX_BODY_MB",
    help="Largest request body (413 beyond).",
)
@click.option(
    "--max-header-bytes",
    type=int,
    default=16384,
    show_default=True,
    envvar="KEYGUARD_MAX_HEADER_BYTES",
    help="Largest request head (431 beyond).",
)
@click.option(
    "--header-timeout",
    type=float,
    default=10.0,
    show_default=True,
    envvar="KEYGUARD_HEADER_TIMEOUT",
    help="Seconds to receive a request head (408).",
)
@click.option(
    "--body-timeout",
    type=float,
    default=60.0,
    show_default=True,
    envvar="KEYGUARD_BODY_TIMEOUT",
    help="Longest pause while a request body is received (408).",
)
@click.option(
    "--keepalive-timeout",
    type=float,
    default=75.0,
    show_default=True,
    envvar="KEYGUARD_KEEPALIVE_TIMEOUT",
    help="Idle keep-alive connection lifetime.",
)
@click.option(
    "--upstream-timeout",
    type=float,
    default=600.0,
    show_default=True,
    envvar="KEYGUARD_UPSTREAM_TIMEOUT",
    help="Seconds to the upstream's first byte, and longest pause in a stream (504).",
)
@click.option(
    "--connect-timeout",
    type=float,
    default=10.0,
    show_default=True,
    envvar="KEYGUARD_CONNECT_TIMEOUT",
    help="Seconds to connect to the upstream.",
)
@click.option(
    "--rotation-interval",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    envvar="KEYGUARD_ROTATION_INTERVAL",
    help="Seconds between checks for due upstream rotations (0: off). Interrupted rotations "
    "are resumed at start.",
)
@click.option(
    "--data-plane",
    type=click.Choice(["python", "native"]),
    default="python",
    show_default=True,
    envvar="KEYGUARD_DATA_PLANE",
    help="'native': the keyguard-edge binary serves the common requests in front of the Python "
    "gateway (docs/edge.md). [env KEYGUARD_DATA_PLANE]",
)
@click.option(
    "--edge-binary",
    type=_PATH,
    envvar="KEYGUARD_EDGE_BINARY",
    help="The keyguard-edge binary for --data-plane native (default: on PATH, else this "
    "checkout's native/edge build). [env KEYGUARD_EDGE_BINARY]",
)
@click.pass_context
def serve_cmd(
    ctx: click.Context,
    /,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_ca: Path | None = None,
    trusted_proxies: tuple[str, ...] = (),
    upstream_ca_bundle: Path | None = None,
    admin_cidrs: tuple[str, ...] = (),
    rotation_interval: float = 300.0,
    data_plane: str = "python",
    edge_binary: Path | None = None,
    **limits: Any,
) -> None:
    """Serve the OpenAI-compatible gateway (clients use virtual keys; keyguard holds the key).

    Point any OpenAI client at http(s)://HOST:PORT/v1 with a keyguard virtual key as its API
    key. /healthz and /readyz are for probes. Stop with Ctrl-C or SIGTERM: in-flight requests
    finish and pending audit records are written first.
    """
    from keyguard.domain.redaction import install_redaction
    from keyguard.gateway.limits_setup import limits_extension
    from keyguard.gateway.server import serve

    settings = settings_from(
        ctx,
        host=host,
        port=port,
        workers=workers,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        trusted_proxies=trusted_proxies or None,
        upstream_ca_bundle=upstream_ca_bundle,
        admin_cidrs=admin_cidrs or None,
    )
    config = gateway_config(settings, **limits)
    native = data_plane == "native"
    binary = None
    if native:
        from keyguard.gateway.edge.supervisor import find_binary

        binary = find_binary(edge_binary)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    install_redaction(logging.getLogger())
    # limits and budgets: Redis (shared, with key events) when redis_url is set, else in-process
    extension = limits_extension(
        redis_url=settings.redis_url,
        prices_file=settings.prices_file,
        degrade=settings.limits_degrade,
    )
    # the admin API under /admin/ (admin tokens; see docs/admin-api.md)
    from keyguard.gateway.admin.setup import with_admin

    extension = with_admin(
        extension,
        upstream_ca_bundle=settings.upstream_ca_bundle,
        allowed_cidrs=settings.admin_cidrs,
        redis_url=settings.redis_url,
    )
    # unlock once here: a wrong or missing master key fails now, with the CLI's message
    vault = open_vault(settings)
    from keyguard.errors import VaultLocked
    from keyguard.wiring import open_vault as reopen

    env = dict(os.environ)
    handed_out: list[Any] = []

    def factory() -> Any:
        """The vault opened above first; then fresh connections (one per worker and use)."""
        if not handed_out and config.workers == 1 and not native:
            handed_out.append(vault)
            return vault
        try:
            return reopen(settings, env, passphrase=None, source="gateway")
        except VaultLocked:  # passphrase-only vault: share the unlocked one (single worker)
            if config.workers == 1:
                return vault
            raise

    if config.workers > 1 or native:
        vault.close()  # each worker opens its own (SQLite connections must not cross a fork)

    def background() -> Callable[[], None]:
        """Resume interrupted rotations now, then rotate what is due every 5 minutes (one
        replica at a time: the rotation lease), on its own vault connection."""
        from keyguard.cli.rotate_cmds import background_rotation

        rot_vault = reopen(settings, env, passphrase=None, source="gateway")
        periodic = background_rotation(settings, rot_vault, interval=rotation_interval)

        def stop() -> None:
            periodic.stop()
            rot_vault.close()

        return stop

    if binary is not None:
        from keyguard.gateway.edge.run import serve_with_edge

        status = serve_with_edge(
            config,
            factory,
            binary=binary,
            accounting=lambda v: edge_accounting(settings, v),
            extension=extension,
            background=background if rotation_interval > 0 else None,
        )
        if status:
            raise SystemExit(status)
        return
    serve(config, factory, extension, background if rotation_interval > 0 else None)


def edge_accounting(settings: Any, vault: Any) -> tuple[Any, Any, bool]:
    """``(limiter, prices, native_limits)`` for the native edge's records: the edge counts
    request-rate and concurrency limits itself only with in-process limits (no Redis)."""
    from keyguard.limits.prices import load_prices

    prices = load_prices(settings.prices_file)
    if settings.redis_url:
        from keyguard.limits.redis_sync import RedisLimiter, connect

        return RedisLimiter(connect(settings.redis_url)), prices, False
    from keyguard.limits.memory import MemoryLimiter, spend_store_for

    return MemoryLimiter(spend_store_for(vault.store)).start(), prices, True
