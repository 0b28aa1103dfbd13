"""Wiring the edge to a core: in threads (tests, embedding) or as processes (``serve``).

The core is the Python gateway listening on a private unix socket (``core.sock`` in a fresh
0700 directory); the edge listens on the configured host and port, terminates client TLS, and
hands the core every request it does not answer itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.edge.records import EdgeAuditSink
from keyguard.gateway.edge.supervisor import EdgeSupervisor
from keyguard.gateway.server import (
    Extension,
    RunningGateway,
    bind_unix,
    run_in_thread,
    worker_main,
)
from keyguard.limits.memory import AsyncMemoryLimiter
from keyguard.limits.ports import Limiter

log = logging.getLogger("keyguard.gateway.edge")


def core_config(config: GatewayConfig, socket_path: Path) -> GatewayConfig:
    """The core's configuration: the edge's, on the unix socket, without client TLS (the
    edge terminates it)."""
    return replace(config, core_socket=socket_path, tls_cert=None, tls_key=None, client_ca=None)


def supervisor(
    config: GatewayConfig,
    vault: Any,
    binary: Path,
    core_socket: Path,
    threads: int,
    limiter: Limiter | None,
    prices: Any,
    native_limits: bool,
) -> EdgeSupervisor:
    """The supervisor of an edge in front of the core on ``core_socket``, auditing into (and
    watching) ``vault``, counting usage with ``limiter``."""
    sink = EdgeAuditSink(vault)
    return EdgeSupervisor(
        config,
        vault,
        vault.store.generation,
        binary=binary,
        core_socket=core_socket,
        threads=threads,
        audit_sink=sink,
        on_close=sink.flush_last_used,
        limiter=limiter,
        prices=prices,
        native_limits=native_limits,
    )


class RunningEdge:
    """Handle on an edge + core pair started by :func:`run_edge_in_thread`."""

    def __init__(self, supervisor: EdgeSupervisor, core: RunningGateway, config: GatewayConfig):
        self.supervisor = supervisor
        self.core = core
        self.server = core.server
        scheme = "https" if config.tls_cert else "http"
        host = config.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{supervisor.port}"

    @property
    def port(self) -> int:
        return self.supervisor.port

    def sync(self) -> None:
        """Make the edge know the vault's keys as they are now (see EdgeSupervisor.sync)."""
        self.supervisor.sync()

    def flush_audit(self) -> None:
        """Wait until every audit record so far (edge and core) has been written."""
        self.supervisor.flush_audit()
        self.core.flush_audit()


@contextlib.contextmanager
def run_edge_in_thread(
    config: GatewayConfig,
    vault: Any,
    *,
    binary: Path,
    threads: int = 1,
    **gateway_kwargs: Any,
) -> Iterator[RunningEdge]:
    """The edge (a child process) in front of a core running in a background thread."""
    rundir = Path(tempfile.mkdtemp(prefix="keyguard-core-"))
    try:
        sock = rundir / "core.sock"
        with run_in_thread(core_config(config, sock), vault, **gateway_kwargs) as core:
            admission = gateway_kwargs.get("limits")
            limiter: Limiter | None = None
            prices = None
            if admission is not None:
                prices = admission.prices
                if isinstance(admission.limiter, AsyncMemoryLimiter):
                    limiter = admission.limiter.limiter  # the core's own counters
            sup = supervisor(
                config, vault, binary, sock, threads, limiter, prices, limiter is not None
            )
            sup.start()
            # a key written through this vault takes effect at the edge before the write
            # returns (in the core it does too: its authenticators are invalidated)
            unsubscribe = vault.on_key_change(sup.sync) if hasattr(vault, "on_key_change") else None
            try:
                yield RunningEdge(sup, core, config)
            finally:
                if unsubscribe is not None:
                    unsubscribe()
                sup.stop()
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def serve_with_edge(
    config: GatewayConfig,
    vault_factory: Callable[[], Any],
    *,
    binary: Path,
    accounting: Callable[[Any], tuple[Limiter | None, Any, bool]],
    extension: Extension | None = None,
    background: Callable[[], Callable[[], None]] | None = None,
) -> int:
    """``keyguard serve --data-plane native``: fork ``config.workers`` core processes on a
    shared unix socket, run the edge with as many threads, supervise until SIGTERM/SIGINT.

    ``accounting(vault)`` gives ``(limiter, prices, native_limits)`` for the edge's records.
    Returns the exit status (non-zero when the edge died on its own)."""
    rundir = Path(tempfile.mkdtemp(prefix="keyguard-core-"))
    os.chmod(rundir, 0o700)
    sock_path = rundir / "core.sock"
    sock = bind_unix(sock_path)
    core_cfg = core_config(config, sock_path)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=worker_main,
            args=(core_cfg, vault_factory, extension, sock),
            name=f"keyguard-core-{i}",
        )
        for i in range(config.workers)
    ]
    for p in procs:
        p.start()
    sock.close()  # the workers hold it
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    old = {sig: signal.signal(sig, lambda _s, _f: stop.set()) for sig in signals}
    vault = vault_factory()
    limiter, prices, native_limits = accounting(vault)
    sup = supervisor(
        config, vault, binary, sock_path, config.workers, limiter, prices, native_limits
    )
    status = 0
    stop_background = None
    try:
        sup.start()
        scheme = "https" if config.tls_cert else "http"
        log.info(
            "keyguard gateway (native edge, %d core workers) listening on %s://%s:%d",
            config.workers,
            scheme,
            config.host,
            sup.port,
        )
        stop_background = background() if background is not None else None
        while not stop.wait(0.5):
            if not sup.alive:
                log.error("keyguard-edge exited unexpectedly (status %s)", sup.wait())
                status = 1
                break
            if not all(p.is_alive() for p in procs):
                log.error("a core worker exited unexpectedly")
                status = 1
                break
    finally:
        sup.stop()
        if stop_background is not None:
            stop_background()
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(config.shutdown_grace + 15)
        if limiter is not None:
            limiter.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        shutil.rmtree(rundir, ignore_errors=True)
    return status
