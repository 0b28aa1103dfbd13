"""Running the native edge (``keyguard-edge``) in front of the Python core (docs/edge.md).

:class:`EdgeSupervisor` starts the edge binary with an empty environment and pipes: its
``Config`` and then ``State`` snapshots go to the edge's stdin (secrets travel only there),
its records come back on stdout (audited and counted by :class:`RecordIntake`), its log lines
on stderr. A thread watches the vault: a snapshot is sent whenever the key table changes
(polled every ``poll_interval``, default 0.1 s: a revocation reaches the edge within that) and
at least every ``config.credential_ttl`` seconds (so a rotated upstream key is picked up as the
core does). Closing stdin stops the edge gracefully.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from keyguard.domain.pricing import PriceTable
from keyguard.domain.records import VirtualKey
from keyguard.errors import ConfigError, KeyguardError
from keyguard.gateway.audit import AuditBatcher
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.edge.records import EdgeAuditItem, RecordIntake
from keyguard.gateway.edge.state import EdgeVault, build_state, edge_config
from keyguard.limits.ports import Limiter

log = logging.getLogger("keyguard.gateway.edge")

BINARY_NAME = "keyguard-edge"
_REPO_BUILD = Path(__file__).resolve().parents[4] / "native" / "edge" / "target" / "release"


def find_binary(configured: str | os.PathLike[str] | None = None) -> Path:
    """The edge binary: ``configured`` (flag / env / config), else ``keyguard-edge`` on PATH,
    else the build in this checkout (``native/edge/target/release``)."""
    if configured:
        path = Path(configured)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(f"edge binary {path} is not an executable file")
        return path
    found = shutil.which(BINARY_NAME)
    if found:
        return Path(found)
    built = _REPO_BUILD / BINARY_NAME
    if built.is_file():
        return built
    raise ConfigError(
        "the native data plane needs the keyguard-edge binary: build it with "
        "'cargo build --release' in native/edge (docs/edge.md), or set KEYGUARD_EDGE_BINARY"
    )


class EdgeSupervisor:
    """Starts, feeds and stops one edge process."""

    def __init__(
        self,
        config: GatewayConfig,
        vault: EdgeVault,
        generation: Callable[[], int],
        *,
        binary: Path,
        core_socket: Path,
        threads: int,
        audit_sink: Callable[[Any], object],
        limiter: Limiter | None = None,
        prices: PriceTable | None = None,
        native_limits: bool,
        poll_interval: float = 0.1,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._vault = vault
        self._generation = generation
        self._binary = binary
        self._core_socket = core_socket
        self._threads = threads
        self._native_limits = native_limits
        self._poll = poll_interval
        self._refresh = max(config.credential_ttl, poll_interval)
        self.audit: AuditBatcher[EdgeAuditItem] = AuditBatcher(
            audit_sink,
            interval=config.audit_interval,
            # all the edge's requests come through here: one transaction per interval under
            # load (the crash window is the interval either way)
            batch_size=max(config.audit_batch_size, 4096),
            on_close=on_close,
        )
        self._keys: dict[str, VirtualKey] = {}
        self._prices = prices
        self.intake = RecordIntake(
            self.audit.append, limiter=limiter, prices=prices, keys=lambda: self._keys
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads_run: list[threading.Thread] = []
        self._last_state = b""
        self._state_lock = threading.Lock()  # one snapshot built and sent at a time
        self._seq = 0  # snapshots sent; the edge acknowledges each once applied
        self._applied = 0
        self._applied_cv = threading.Condition()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> int:
        """Start the edge, send its configuration and a first snapshot; returns its port."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        self._proc = subprocess.Popen(
            [str(self._binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._spawn(self._log_lines, self._proc.stderr, "keyguard-edge-log")
        cfg = edge_config(self._config, self._core_socket, self._threads, self._prices)
        self._send(json.dumps(cfg).encode())
        self._push_state(force=True)
        self.port = self._await_ready(self._proc.stdout, timeout)
        self._spawn(self._read_records, self._proc.stdout, "keyguard-edge-records")
        self._spawn(self._watch, None, "keyguard-edge-state")
        return self.port

    def stop(self, timeout: float | None = None) -> int | None:
        """Close the edge's stdin (graceful shutdown), wait, then flush the audit."""
        self._stop.set()
        proc = self._proc
        code = None
        if proc is not None:
            with self._send_lock:
                if proc.stdin is not None and not proc.stdin.closed:
                    with contextlib.suppress(OSError):  # the edge is gone already
                        proc.stdin.close()
            wait = timeout if timeout is not None else self._config.shutdown_grace + 5.0
            try:
                code = proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("keyguard-edge did not stop in %.0f s: killed", wait)
                proc.kill()
                code = proc.wait()
        for t in self._threads_run:
            t.join(10)
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.audit.close()
        return code

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def sync(self, timeout: float = 2.0) -> None:
        """Send a snapshot now and wait until the edge has applied it: a key written through
        this process's vault (created, revoked, rotated) takes effect at the edge before the
        write returns, as it does in the core (:meth:`Vault.on_key_change`)."""
        seq = self._push_state(force=True)
        deadline = time.monotonic() + timeout
        with self._applied_cv:
            while self._applied < seq and self.alive:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("edge: snapshot %d not acknowledged in %.1f s", seq, timeout)
                    return
                self._applied_cv.wait(left)

    def flush_audit(self) -> None:
        """Wait until the records of every request answered so far are written (tests): the
        edge flushes its records at least every 20 ms."""
        time.sleep(0.1)
        self.audit.flush()

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], arg: Any, name: str) -> None:
        t = threading.Thread(target=target, args=(arg,) if arg is not None else (), name=name)
        t.daemon = True
        t.start()
        self._threads_run.append(t)

    def _send(self, line: bytes) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        with self._send_lock:
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()

    def _push_state(self, *, force: bool = False) -> int:
        """Build a snapshot and send it when it differs from the last one (or ``force``);
        returns the sequence number the edge will acknowledge for it."""
        with self._state_lock:
            generation = self._generation()
            state, keys = build_state(self._vault, generation, native_limits=self._native_limits)
            self._keys = {k.key_id: k for k in keys}
            line = json.dumps(state, separators=(",", ":")).encode()
            if force or line != self._last_state:
                self._last_state = line
                self._seq += 1
                self._send(line[:-1] + b',"seq":%d}' % self._seq)
            return self._seq

    def _watch(self) -> None:
        seen = None
        refreshed = time.monotonic()
        while not self._stop.wait(self._poll):
            try:
                generation = self._generation()
                if generation != seen or time.monotonic() - refreshed >= self._refresh:
                    self._push_state()
                    seen = generation
                    refreshed = time.monotonic()
            except (KeyguardError, OSError) as exc:
                # the store is away: the edge keeps its last snapshot (as the core's cache)
                log.warning("edge: could not refresh its snapshot (%s)", type(exc).__name__)

    def _await_ready(self, out: IO[bytes], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        box: dict[str, Any] = {}

        def read() -> None:
            box["line"] = out.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        line = box.get("line")
        if not line:
            code = self._proc.poll() if self._proc is not None else None
            if self._proc is not None and code is None:
                self._proc.kill()
            raise ConfigError(
                f"keyguard-edge did not start (exit code {code}); see its log lines above"
            )
        try:
            ready = json.loads(line)
            if ready.get("type") != "ready":
                raise ValueError("not a ready line")
            return int(ready["port"])
        except (ValueError, KeyError, TypeError):
            if self._proc is not None:
                self._proc.kill()
            raise ConfigError("keyguard-edge did not report its port") from None

    def _read_records(self, out: IO[bytes]) -> None:
        """Read whatever the pipe holds (many records under load), take them in, count their
        usage once per key; acknowledgements wake :meth:`sync`."""
        intake = self.intake
        read = getattr(out, "read1", out.read)
        rest = b""
        while True:
            chunk = read(1 << 16)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            records = []
            for line in lines:
                if line.startswith(b'{"type":"applied"'):
                    self._acknowledged(line)
                elif line:
                    records.append(line)
            intake.intake_many(records)
        with self._applied_cv:  # the edge is gone: nobody waits for it any more
            self._applied_cv.notify_all()

    def _acknowledged(self, line: bytes) -> None:
        try:
            seq = int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("edge: unreadable acknowledgement")
            return
        with self._applied_cv:
            self._applied = max(self._applied, seq)
            self._applied_cv.notify_all()

    def _log_lines(self, err: IO[bytes]) -> None:
        for raw in err:
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                log.info("edge: %s", text[:2000])
