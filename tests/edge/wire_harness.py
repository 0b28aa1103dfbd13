"""A tiny supervisor, a fake core and key helpers for driving ``keyguard-edge`` directly.

The edge reads a Config line then State lines on stdin (native/edge/src/protocol.rs) and prints
``{"type":"ready","port":N}`` then records on stdout. :class:`Edge` runs the binary, writes
those lines itself, and collects stdout/stderr so a test can check records and that no secret
was ever printed. :class:`FakeCore` is an HTTP server on a unix socket standing in for the
Python core: it records what it got and answers 200 (or what the test asks).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from keyguard.domain.keys import generate_virtual_key, parse_virtual_key
from keyguard.vault.auth import secret_digest

SERVER_KEY = os.urandom(32)


@dataclass
class VKey:
    """A virtual key made at run time: its id, the token a client sends, its State entry."""

    key_id: str
    token: str
    entry: dict[str, Any]


def make_key(upstream: str = "default", **spec: Any) -> VKey:
    """A fresh virtual key whose State entry matches its digest under :data:`SERVER_KEY`."""
    kid, token = generate_virtual_key()
    parts = parse_virtual_key(token)
    entry: dict[str, Any] = {
        "id": kid,
        "digests": [[secret_digest(SERVER_KEY, parts.secret).hex(), None]],
        "revoked": False,
        "expires": None,
        "models": [],
        "endpoints": [],
        "cidrs": [],
        "upstream": upstream,
        "rpm": None,
        "max_concurrency": None,
        "core_only": False,
    }
    entry.update(spec)
    return VKey(kid, token, entry)


def route(
    name: str, port: int, auth_key: str, *, host: str = "127.0.0.1", **extra: Any
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "name": name,
        "scheme": "https",
        "host": host,
        "port": port,
        "host_header": f"{host}:{port}",
        "base_path": "/v1",
        "auth": [["authorization", f"Bearer {auth_key}"]],
        "version": 1,
        "fallback": False,
    }
    r.update(extra)
    return r


def state(keys: list[VKey], routes: list[dict[str, Any]], native_limits: bool = True) -> str:
    return json.dumps(
        {
            "type": "state",
            "generation": 1,
            "server_key": SERVER_KEY.hex(),
            "keys": [k.entry for k in keys],
            "routes": routes,
            "native_limits": native_limits,
        }
    )


# ---- the fake core ----------------------------------------------------------------------------
@dataclass
class CoreRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    core: FakeCore


class _CoreHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UnixServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "core"

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _any(self) -> None:
        body = self._read_body()
        core = self.server.core
        core.requests.put(CoreRequest(self.command, self.path, list(self.headers.items()), body))
        payload = json.dumps({"core": True, "path": self.path}).encode()
        self.send_response(core.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any


class FakeCore:
    """The core's unix socket: every request it gets lands in :attr:`requests`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.status = 200
        self.requests: queue.Queue[CoreRequest] = queue.Queue()
        self._server = _UnixServer(str(path), _CoreHandler)
        self._server.core = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCore:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def get(self, timeout: float = 5.0) -> CoreRequest:
        return self.requests.get(timeout=timeout)

    def empty(self) -> bool:
        return self.requests.empty()


# ---- the edge process -------------------------------------------------------------------------
def config(core_socket: Path, ca_bundle: Path | None, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "type": "config",
        "host": "127.0.0.1",
        "port": 0,
        "threads": 2,
        "tls_cert": None,
        "tls_key": None,
        "client_ca": None,
        "core_socket": str(core_socket),
        "upstream_ca_bundle": str(ca_bundle) if ca_bundle else None,
        "trusted_proxies": [],
        "max_header_bytes": 16384,
        "max_body_bytes": 1024 * 1024,
        "header_timeout": 5.0,
        "keepalive_timeout": 10.0,
        "body_timeout": 5.0,
        "upstream_timeout": 5.0,
        "upstream_connect_timeout": 2.0,
        "upstream_idle_ttl": 30.0,
        "audit_json_sniff_limit": 65536,
        "throttle_burst": 20,
        "throttle_rate": 1.0,
        "shutdown_grace": 2.0,
    }
    cfg.update(overrides)
    return cfg


@dataclass
class Edge:
    """A running ``keyguard-edge``: its port, records, and everything it printed."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, binary: Path, cfg: dict[str, Any], state_line: str | None) -> Edge:
        proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(cfg).encode() + b"\n")
        if state_line is not None:
            proc.stdin.write(state_line.encode() + b"\n")
        proc.stdin.flush()
        ready = proc.stdout.readline()
        if not ready:
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.wait(5)
            raise AssertionError(f"the edge did not start: {err}")
        msg = json.loads(ready)
        assert msg["type"] == "ready"
        edge = cls(proc, int(msg["port"]), stdout=[ready.decode()])
        for stream, sink in ((proc.stdout, edge.stdout), (proc.stderr, edge.stderr)):
            t = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            t.start()
            edge.threads.append(t)
        if state_line is not None:
            edge.wait_log("state generation")
        return edge

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send_state(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.stderr):
                if text in line:
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no log line with {text!r}: {self.stderr}")

    def records(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait for at least ``n`` records; all of them so far."""
        end = time.monotonic() + timeout
        while True:
            recs = [
                parse_record(x)
                for x in list(self.stdout)
                if '"type":"r"' in x or x.startswith("R\t")
            ]
            if len(recs) >= n or time.monotonic() > end:
                return recs
            time.sleep(0.01)

    def stop(self) -> int:
        """EOF on stdin: graceful shutdown; the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        for t in self.threads:
            t.join(5)
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()
        return rc

    def printed(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


def _pump(stream: Any, sink: list[str]) -> None:
    for line in iter(stream.readline, b""):
        sink.append(line.decode("utf-8", "replace"))


# ---- raw HTTP ---------------------------------------------------------------------------------
def raw(port: int, data: bytes, *, timeout: float = 5.0, wait_close: bool = True) -> bytes:
    """Send ``data`` on a fresh connection; what came back until the edge closed (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not wait_close and b"\r\n\r\n" in out:
                    break
        except TimeoutError:
            pass
        return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def parse_record(line: str) -> dict[str, Any]:
    """A record line as a dict: a JSON record as it is; a tab-separated one (audit row rendered,
    usage priced: native/edge/src/wire/records.rs) with the request's fields read back from its
    rendered row, so tests can treat both alike."""
    if not line.startswith("R\t"):
        return dict(json.loads(line))
    parts = line.rstrip("\n").split("\t")
    assert len(parts) == 13, parts
    _, t, key_id, status, tokens, cost, content, when_iso, details, *columns = parts
    doc = json.loads(content)
    det = doc["details"]
    method, _, path = doc["subject"].partition(" ")
    return {
        "type": "r",
        "tab": True,
        "t": int(t),
        "key_id": key_id or None,
        "status": int(status),
        "tokens": int(tokens),
        "cost_nano": int(cost),
        "audit": [content, when_iso, details, *columns],
        "client_ip": doc["source"],
        "method": method,
        "path": path,
        "model": det["model"],
        "latency_ms": det["latency_ms"],
        "upstream": det["upstream"],
        "version": det["upstream_version"],
    }
