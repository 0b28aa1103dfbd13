"""Running the gateway: bind, serve on uvloop (when installed), shut down cleanly, N workers.

* :func:`serve` — blocking, for ``keyguard serve`` / ``keyguard up``. With ``workers > 1`` it
  forks that many processes; each binds the same address with ``SO_REUSEPORT`` (the kernel
  spreads connections) and opens its own vault through ``vault_factory``.
* :func:`run_in_thread` — a context manager for tests and embedding: the gateway runs on its own
  event loop in a background thread; yields a :class:`RunningGateway` with its URL.
* :class:`GatewayServer` — the pieces both use: build the app from a vault, bind, start, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from keyguard.errors import ConfigError
from keyguard.gateway.app import Gateway
from keyguard.gateway.audit import AuditBatcher, RequestRecord
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.errors import render_wire_error
from keyguard.gateway.http.server import HttpServerProtocol
from keyguard.gateway.http.tls import server_context
from keyguard.gateway.http.tracker import ConnectionTracker
from keyguard.gateway.ports import VaultLike

log = logging.getLogger("keyguard.gateway")


#: the details of a ``gateway.request`` audit record (ids and figures, never secrets)
REQUEST_DETAILS = ("status", "latency_ms", "model", "upstream", "upstream_version")


def audit_row(
    r: RequestRecord,
) -> tuple[datetime, str, str, str, str, tuple[object, ...]]:
    """The ``gateway.request`` audit row of one request (details as :data:`REQUEST_DETAILS`)."""
    return (
        r.time,
        f"key:{r.key_id}" if r.key_id else "anonymous",
        f"{r.method} {r.path}",
        r.client_ip,
        r.outcome,
        (r.status, r.latency_ms, r.model, r.upstream, r.upstream_version),
    )


class VaultAuditSink:
    """Writes audit batches to the vault; records keys' ``last_used_at`` at most every
    ``touch_interval`` seconds (a separate transaction per batch would cost more than the
    audit itself, and last-use needs no sub-minute precision)."""

    def __init__(self, vault: VaultLike, touch_interval: float = 30.0) -> None:
        self._vault = vault
        self._append = vault.audit.uniform("gateway.request", REQUEST_DETAILS)
        self._interval = touch_interval
        self._last_used: dict[str, datetime] = {}
        self._touched = time.monotonic()

    def __call__(self, batch: Sequence[RequestRecord]) -> None:
        self._append.append([audit_row(r) for r in batch])
        last_used = self._last_used
        for r in batch:
            if r.key_id is not None and r.status < 400:
                last_used[r.key_id] = r.time
        self.touch_when_due()

    def touch_when_due(self) -> None:
        """Write the keys' last use when ``touch_interval`` has passed since the last time."""
        if time.monotonic() - self._touched >= self._interval:
            self.flush_last_used()

    def flush_last_used(self) -> None:
        self._touched = time.monotonic()
        last_used, self._last_used = self._last_used, {}
        if last_used:
            try:
                self._vault.touch_keys(last_used)
            except Exception as exc:
                log.warning("could not record last use of keys: %s", type(exc).__name__)


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: Path) -> socket.socket:
    """The core's listening socket: a unix socket only this user can connect to."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"{path} exists and is not a socket")
        path.unlink()  # a stale socket of an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class GatewayServer:
    """The gateway bound to one socket on the current event loop."""

    def __init__(
        self,
        config: GatewayConfig,
        vault: VaultLike,
        *,
        gateway_kwargs: dict[str, Any] | None = None,
        audit_vault: VaultLike | None = None,
    ) -> None:
        self.config = config
        # a second connection for the audit writer keeps its transactions (and the store's
        # lock) off the request path's reads
        sink = VaultAuditSink(audit_vault if audit_vault is not None else vault)
        self.audit: AuditBatcher[RequestRecord] = AuditBatcher(
            sink,
            interval=config.audit_interval,
            batch_size=config.audit_batch_size,
            on_close=sink.flush_last_used,
        )

        def ready() -> bool:
            vault.store.generation()  # raises when the store is unreachable
            return True

        self.gateway = Gateway(
            config,
            authenticator=vault.authenticator(),
            upstreams=vault,
            audit=self.audit,
            ready=ready,
            **(gateway_kwargs or {}),
        )
        self._ssl = (
            server_context(config.tls_cert, config.tls_key, config.client_ca)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        self._server: asyncio.AbstractServer | None = None
        sweep = min(1.0, config.limits.header_timeout / 4, config.limits.keepalive_timeout / 4)
        self._connections = ConnectionTracker(sweep)
        self.port = config.port

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind (or serve ``sock``, bound already: the core socket shared by forked workers)."""
        cfg = self.config
        if sock is None:
            sock = (
                bind_unix(cfg.core_socket)
                if cfg.core_socket is not None
                else _bind(cfg.host, cfg.port, reuse_port=cfg.workers > 1)
            )
        self.port = 0 if sock.family == socket.AF_UNIX else sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        limits = cfg.limits
        self._connections.start()

        def factory() -> HttpServerProtocol:
            return HttpServerProtocol(
                self.gateway.handle, limits, render_wire_error, self._connections
            )

        if sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(factory, sock=sock)
        elif self._ssl is not None:
            self._server = await loop.create_server(
                factory, sock=sock, ssl=self._ssl, ssl_handshake_timeout=limits.header_timeout
            )
        else:
            self._server = await loop.create_server(factory, sock=sock)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), flush audit."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.shutdown()
        deadline = asyncio.get_running_loop().time() + self.config.shutdown_grace
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        self._connections.stop()
        self.gateway.close()
        await asyncio.to_thread(self.audit.close)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the gateway extra
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


#: per-worker add-ons (limits, key events): called with the worker's vault inside its loop;
#: returns an object with ``vault``, ``gateway_kwargs`` and ``async aclose()``
Extension = Callable[[VaultLike], Any]


async def _serve_forever(
    config: GatewayConfig,
    vault: VaultLike,
    extension: Extension | None = None,
    audit_vault: VaultLike | None = None,
    sock: socket.socket | None = None,
) -> None:
    ext = extension(vault) if extension is not None else None
    if ext is not None:
        vault = ext.vault
    server = GatewayServer(
        config,
        vault,
        gateway_kwargs=ext.gateway_kwargs if ext else None,
        audit_vault=audit_vault,
    )
    await server.start(sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.core_socket is not None:
        log.info("keyguard core pid %d serving the edge on %s", os.getpid(), config.core_socket)
    else:
        scheme = "https" if config.tls_cert else "http"
        log.info(
            "keyguard gateway pid %d listening on %s://%s:%d",
            os.getpid(),
            scheme,
            config.host,
            server.port,
        )
    await stop.wait()
    await server.stop()
    if ext is not None:
        await ext.aclose()


def _raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: idle keep-alive clients are cheap in
    memory (a few KiB each) but each needs a descriptor."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1_048_576:
            hard = 1_048_576
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not permitted / not POSIX
        pass


def worker_main(
    config: GatewayConfig,
    vault_factory: Callable[[], VaultLike],
    extension: Extension | None = None,
    sock: socket.socket | None = None,
) -> None:
    """One gateway process: open the vault, serve until SIGTERM/SIGINT (on ``sock`` when
    given: the core socket the native edge's supervisor bound before forking)."""
    _raise_fd_limit()
    vault = vault_factory()
    audit_vault = vault_factory()
    loop = _new_loop()
    try:
        loop.run_until_complete(_serve_forever(config, vault, extension, audit_vault, sock))
    finally:
        loop.close()


def serve(
    config: GatewayConfig,
    vault_factory: Callable[[], VaultLike],
    extension: Extension | None = None,
    background: Callable[[], Callable[[], None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. ``vault_factory`` opens the vault (once per worker);
    ``extension`` adds limits and key events to each worker (see ``limits_setup``).
    ``background`` starts housekeeping (scheduled rotation) once per server, after any fork,
    and returns the function that stops it."""
    if config.workers == 1:
        stop = background() if background is not None else None
        try:
            worker_main(config, vault_factory, extension)
        finally:
            if stop is not None:
                stop()
        return
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=worker_main, args=(config, vault_factory, extension), name=f"keyguard-worker-{i}"
        )
        for i in range(config.workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    stop = background() if background is not None else None  # in the parent, after the forks
    try:
        for p in procs:
            p.join()
    finally:
        if stop is not None:
            stop()


class RunningGateway:
    """Handle on a gateway running in a background thread."""

    def __init__(self, server: GatewayServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        scheme = "https" if server.config.tls_cert else "http"
        host = server.config.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{server.port}"

    @property
    def port(self) -> int:
        return self.server.port

    def flush_audit(self) -> None:
        """Wait until every audit record so far has been written (tests)."""
        self.server.audit.flush()


@contextlib.contextmanager
def run_in_thread(
    config: GatewayConfig, vault: VaultLike, *, uvloop: bool = True, **gateway_kwargs: Any
) -> Iterator[RunningGateway]:
    """Run the gateway on its own loop in a daemon thread for the duration of the block."""
    loop = _new_loop() if uvloop else asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        try:
            server = GatewayServer(config, vault, gateway_kwargs=gateway_kwargs)
            await server.start()
        except BaseException as exc:
            box["error"] = exc
            started.set()
            return
        box["server"] = server
        box["stop"] = stop = asyncio.Event()
        started.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    if "error" in box:
        thread.join(5)
        loop.close()
        raise box["error"]
    try:
        yield RunningGateway(box["server"], loop)
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        loop.close()


__all__: Sequence[str] = ["GatewayServer", "RunningGateway", "run_in_thread", "serve"]
