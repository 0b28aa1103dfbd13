"""Gateway benchmark: direct vs an nginx reverse proxy (header swap) vs keyguard, in ONE run.

Run by hand (not in CI); needs ``nginx`` and ``wrk`` (``apt-get install -y nginx-light wrk``)::

    .venv/bin/python bench/gateway.py [--duration 5] [--workers 2] [--conns 1,32,128]

What it starts (all on loopback, the same cores):

* upstream: nginx returning a fixed OpenAI-shaped chat completion (plain HTTP on loopback, so
  only the proxy hop is measured), and a small asyncio SSE server (events paced on request);
* nginx proxy: checks the virtual key (map), an IP allowlist (allow/deny), a rate limit
  (limit_req, set high), swaps Authorization, keep-alive to the upstream;
* py-hop: keyguard's own wire layer (``gateway/http``) as N processes doing only the hop — no
  checks, no audit: the ceiling for any keyguard on this machine (``HOP_SCRIPT``);
* keyguard: ``keyguard serve --workers N`` on a real SQLite vault; the key has a model allowlist
  (so the JSON body is read and checked), an IP allowlist and an rpm limit (set high, so it
  is counted but never denies); audit on (batched, one record per request).

Measures with wrk at each connection count: req/s, p50/p99 latency, CPU µs per request of the
proxy processes; SSE time to first chunk (p50 over 200 sequential streams, 1 connection);
64 paced streams' wall time; RSS per idle keep-alive connection. Prints keyguard/nginx ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CHAT_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop","message":'
    '{"role":"assistant","content":"Hello from the bench upstream."}}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}'
)
REQ_BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


# ---- processes ---------------------------------------------------------------------------------


def nginx_conf(
    work: Path, up_port: int, sse_port: int, proxy_port: int, real_key: str, vk: str, workers: int
) -> Path:
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp; uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    upstream up {{ server 127.0.0.1:{up_port}; keepalive 256; }}
    upstream sse {{ server 127.0.0.1:{sse_port}; keepalive 256; }}
    map_hash_bucket_size 256;
    map $http_authorization $vk_ok {{ default 0; "Bearer {vk}" 1; }}
    limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;
    server {{
        listen 127.0.0.1:{up_port} reuseport backlog=4096;
        location / {{ default_type application/json; return 200 '{CHAT_BODY}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port} reuseport backlog=4096;
        allow 127.0.0.0/8; deny all;
        location /v1/ {{
            if ($vk_ok = 0) {{ return 401; }}
            limit_req zone=perip burst=1000000 nodelay;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {real_key}";
            proxy_buffering off;
            proxy_pass http://up;
        }}
        location /sse/ {{
            if ($vk_ok = 0) {{ return 401; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {real_key}";
            proxy_buffering off;
            proxy_pass http://sse/v1/;
        }}
    }}
}}
""")
    (work / "tmp").mkdir(exist_ok=True)
    return conf


def make_vault(
    work: Path, up_port: int, sse_port: int, real_key: str
) -> tuple[dict[str, str], str, str]:
    """A vault in ``work/kg-home`` with the bench keys; returns ``(env, token, sse token)``."""
    from keyguard.config import load_settings
    from keyguard.domain.records import KeySpec
    from keyguard.domain.secret import Secret
    from keyguard.wiring import create_vault

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env["KEYGUARD_HOME"] = str(work / "kg-home")
    vault = create_vault(load_settings(env=env), env)
    vault.add_upstream(
        "default",
        Secret(real_key),
        base_url=f"http://127.0.0.1:{up_port}/v1",
        allow_insecure_loopback=True,
    )
    vault.add_upstream(
        "sse",
        Secret(real_key),
        base_url=f"http://127.0.0.1:{sse_port}/v1",
        allow_insecure_loopback=True,
    )
    # all checks on: model allowlist, IP allowlist and a rate limit (high enough never to deny)
    spec = {
        "allowed_models": ["gpt-4o*"],
        "allowed_cidrs": ["127.0.0.0/8", "::1/128"],
        "rpm": 1_000_000_000,
    }
    _, token = vault.create_key(KeySpec(name="bench", upstream="default", **spec))
    _, sse_token = vault.create_key(KeySpec(name="bench-sse", upstream="sse", **spec))
    vault.close()
    return env, token.reveal(), sse_token.reveal()


def start_keyguard(
    work: Path, env: dict[str, str], port: int, workers: int, plane: str
) -> subprocess.Popen[bytes]:
    """``keyguard serve`` with the python or the native data plane (docs/edge.md)."""
    return subprocess.Popen(
        [
            str(ROOT / ".venv/bin/keyguard"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--keepalive-timeout",
            "600",
            "--data-plane",
            plane,
            "--rotation-interval",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"keyguard-{plane}.log", "wb"),  # noqa: SIM115 - lives as long as it
    )


#: keyguard's wire layer (gateway/http: server + pooled client) doing only the hop: no key, IP,
#: policy or limit check, no audit. Run as N processes on one port (SO_REUSEPORT), it is the
#: ceiling for keyguard on this machine: what the wire costs before keyguard does anything.
HOP_SCRIPT = r"""
import asyncio, sys, uvloop
from keyguard.gateway.http.framing import ServerLimits
from keyguard.gateway.http.server import HttpServerProtocol
from keyguard.gateway.http.tracker import ConnectionTracker
from keyguard.gateway.http.client import ConnectionPool, Origin
from keyguard.gateway.headers import request_head, response_headers
up_port, port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
AUTH = b"authorization: Bearer " + key + b"\r\n"
async def main():
    pool = ConnectionPool()
    origin = Origin("http", "127.0.0.1", up_port)
    async def handle(req, w):
        body = await req.body.read_all(1 << 20)
        head = request_head(req.method, req.target, b"127.0.0.1", req.headers, AUTH,
                            b"content-length: %d\r\n" % len(body))
        conn = await pool.acquire(origin)
        conn.begin(head + body)
        status = await conn.read_head(60)
        cl = next((int(v) for k, v in conn.headers if k == b"content-length"), None)
        w.start(status, response_headers(conn.headers), cl)
        while chunk := await conn.read(60):
            w.write(chunk)
        w.end()
        pool.release(origin, conn)
    conns = ConnectionTracker(); conns.start()
    limits = ServerLimits()
    srv = await asyncio.get_running_loop().create_server(
        lambda: HttpServerProtocol(handle, limits, lambda s, m, c: b"{}", conns), "127.0.0.1", port,
        reuse_port=True, backlog=4096)
    await srv.serve_forever()
uvloop.run(main())
"""


SSE_SCRIPT = r"""
import asyncio, sys
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            q = dict(p.split("=") for p in line.split(" ")[1].partition("?")[2].split("&") if "=" in p)
            close = b"connection: close" in head.lower()
            asyncio.get_running_loop().create_task(self.stream(int(q.get("n", 1)), float(q.get("gap", 0)), close))
    async def stream(self, n, gap, close):
        self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(n):
            ev = b'data: {"i": %d}\n\n' % i
            self.t.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            if gap: await asyncio.sleep(gap)
        self.t.write(b"0\r\n\r\n")
        if close: self.t.close()
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await s.serve_forever()
asyncio.run(main())
"""


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def family(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(p) for p in out.split()]


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        total += int(m.group(1)) if m else 0
    return total


# ---- measurements -------------------------------------------------------------------------------


def run_wrk(url: str, conns: int, duration: int, token: str, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{REQ_BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")\n'
    )
    threads = min(2, conns)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_TOKEN": token},
        check=True,
    ).stdout

    def lat(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": lat("50"),
        "p99": lat("99"),
        "requests": total,
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


async def _sse_ttfc(port: int, path: str, token: str, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = (f"GET {path}?n=1 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        writer.write(req)
        buf = b""
        while b"data:" not in buf:
            buf += await reader.read(65536)
        times.append((time.perf_counter() - t0) * 1000)
        while not buf.endswith(b"0\r\n\r\n"):
            buf += await reader.read(65536)
    writer.close()
    return times


async def _paced_streams(port: int, path: str, token: str, streams: int) -> float:
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET {path}?n=20&gap=0.01 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        data = await reader.read()
        assert data.count(b"data:") == 20, data[:200]
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    return time.perf_counter() - t0


def idle_memory(port: int, pids: list[int], n: int) -> float:
    before = rss_kb(pids)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.recv(4096)
    time.sleep(0.5)
    after = rss_kb(pids)
    for s in socks:
        s.close()
    return (after - before) * 1024 / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conns", default="1,32,128")
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument(
        "--planes",
        default="python,native",
        help="keyguard data planes to measure: python (keyguard serve) and/or native "
        "(--data-plane native: needs native/edge built)",
    )
    args = ap.parse_args()
    planes = [p for p in args.planes.split(",") if p]
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx-light wrk")
    from keyguard.domain.keys import generate_openai_style_key, generate_virtual_key

    real_key = generate_openai_style_key()
    _, nginx_vk = generate_virtual_key()
    work = Path(tempfile.mkdtemp(prefix="kg-bench-"))
    up_port, sse_port, ngx_port = free_port(), free_port(), free_port()
    conf = nginx_conf(work, up_port, sse_port, ngx_port, real_key, nginx_vk, args.workers)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ngx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])
        procs.append(ngx)
        sse = subprocess.Popen([sys.executable, "-c", SSE_SCRIPT, str(sse_port)])
        procs.append(sse)
        env, kg_token, kg_sse_token = make_vault(work, up_port, sse_port, real_key)
        kg_ports = {plane: free_port() for plane in planes}
        kgs = {
            plane: start_keyguard(work, env, port, args.workers, plane)
            for plane, port in kg_ports.items()
        }
        procs += kgs.values()
        hop_port = free_port()
        hops = [
            subprocess.Popen(
                [sys.executable, "-c", HOP_SCRIPT, str(up_port), str(hop_port), real_key]
            )
            for _ in range(args.workers)
        ]
        procs += hops
        for p in (up_port, sse_port, ngx_port, hop_port, *kg_ports.values()):
            wait_port(p)
        time.sleep(1.0)
        targets: dict[str, tuple[int, str, str, int | list[int] | None]] = {
            "direct": (up_port, "", nginx_vk, None),
            "nginx": (ngx_port, "", nginx_vk, ngx.pid),
            "py-hop": (hop_port, "", nginx_vk, [h.pid for h in hops]),
        }
        names = {"python": "keyguard", "native": "kg-native"}
        for plane in planes:
            targets[names[plane]] = (kg_ports[plane], "", kg_token, kgs[plane].pid)
        print(
            f"# load before: {os.getloadavg()}  cores: {os.cpu_count()}  workers: "
            f"{args.workers}  duration: {args.duration}s"
        )
        results: dict[tuple[str, int], dict[str, float]] = {}
        for conns in [int(c) for c in args.conns.split(",")]:
            for name, (port, _, token, pid) in targets.items():
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                run_wrk(url, conns, 1, token, work)  # warm-up (pools, caches)
                pids = pid if isinstance(pid, list) else family(pid) if pid else []
                c0 = cpu_seconds(pids)
                r = run_wrk(url, conns, args.duration, token, work)
                r["cpu_us"] = (cpu_seconds(pids) - c0) / max(r["requests"], 1) * 1e6 if pid else 0
                results[(name, conns)] = r
                print(
                    f"{name:9s} c={conns:<4d} {r['rps']:9.0f} req/s  p50 {r['p50']:7.3f} ms  "
                    f"p99 {r['p99']:7.3f} ms  cpu {r['cpu_us']:6.1f} us/req  "
                    f"non-2xx {int(r['errors'])}",
                    flush=True,
                )
        print()
        for conns in [int(c) for c in args.conns.split(",")]:
            n, d, h = (
                results[("nginx", conns)],
                results[("direct", conns)],
                results[("py-hop", conns)],
            )
            print(
                f"c={conns:<4d} py-hop/nginx {h['rps'] / n['rps']:.2f}x   added p50 vs direct: "
                f"nginx {n['p50'] - d['p50']:+.3f} ms"
            )
            for plane in planes:
                k = results[(names[plane], conns)]
                print(
                    f"       {names[plane]}/nginx throughput {k['rps'] / n['rps']:.2f}x   "
                    f"added p50 vs direct {k['p50'] - d['p50']:+.3f} ms   "
                    f"cpu {k['cpu_us']:.1f} us/req (nginx {n['cpu_us']:.1f})"
                )
        print()
        sse_targets = {
            "direct": (sse_port, "/v1/stream", nginx_vk),
            "nginx": (ngx_port, "/sse/stream", nginx_vk),
        }
        for plane in planes:
            sse_targets[names[plane]] = (kg_ports[plane], "/v1/stream", kg_sse_token)
        ttfc = {}
        for name, (port, path, token) in sse_targets.items():
            asyncio.run(_sse_ttfc(port, path, token, 20))
            ttfc[name] = statistics.median(asyncio.run(_sse_ttfc(port, path, token, 200)))
            wall = asyncio.run(_paced_streams(port, path, token, 64))
            print(
                f"SSE {name:9s} time-to-first-chunk p50 {ttfc[name]:.3f} ms   "
                f"64 paced streams (20 x 10 ms) {wall * 1000:.0f} ms"
            )
        added = ", ".join(
            f"{name} {ttfc[name] - ttfc['direct']:+.3f} ms" for name in ttfc if name != "direct"
        )
        print(f"SSE added TTFC p50: {added}")
        for plane in planes:
            kg_pids = family(kgs[plane].pid)
            per_conn = idle_memory(kg_ports[plane], kg_pids[1:] or kg_pids, args.idle)
            print(
                f"{names[plane]} RSS per idle keep-alive connection: {per_conn / 1024:.1f} KiB "
                f"(10,000 idle -> {per_conn * 10000 / 2**20:.0f} MiB)"
            )
        print(f"# load after: {os.getloadavg()}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM if p is not procs[0] else signal.SIGQUIT)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
