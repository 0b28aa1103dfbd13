"""Multi-replica benchmark: 2 gateway replicas + PostgreSQL + Redis on this machine.

Run by hand (not in CI); needs ``nginx``, ``wrk``, ``redis-server`` and the PostgreSQL at
``KEYGUARD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)::

    .venv/bin/python bench/replicas.py [--duration 5] [--conns 32]

For each limits mode — ``off`` (no limiter), ``memory`` (in-process limiter, spend persisted
to PostgreSQL) and ``redis`` (shared Lua limiter on a private redis-server, key events) — it
starts two replicas (one process each, the vault in one PostgreSQL schema), drives both at once
with wrk (``--conns`` per replica; a key with rpm/tpm/budget limits set high, so every request
is reserved and settled but never denied), and prints total req/s and p50/p99 latency. The
modes run interleaved for ``--rounds`` rounds and medians are shown (the machine is shared).
Then the added latency: p50 of 400 sequential requests on one connection per mode, and the raw
cost of one reserve + settle round trip pair against Redis from asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PG_URL = os.environ.get("KEYGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHAT_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop","message":'
    '{"role":"assistant","content":"Hello from the bench upstream."}}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}'
)
REQ_BODY = (
    '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/readyz", timeout: float = 30.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready")


# ---- one replica (this file re-executed with --replica) ----------------------------------------


def replica_main(mode: str, port: int) -> None:
    from keyguard.config import load_settings
    from keyguard.gateway.config import GatewayConfig
    from keyguard.gateway.limits_setup import limits_extension
    from keyguard.gateway.server import serve
    from keyguard.wiring import open_vault

    env = dict(os.environ)
    settings = load_settings(env=env)
    config = GatewayConfig(port=port, throttle_burst=10**6)
    extension = None
    if mode != "off":
        extension = limits_extension(redis_url=settings.redis_url if mode == "redis" else None)
    serve(config, lambda: open_vault(settings, env, source="gateway"), extension)


# ---- the run -------------------------------------------------------------------------------------


def run_wrk(port: int, conns: int, duration: int, token: str, work: Path) -> subprocess.Popen[str]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{REQ_BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")\n'
        "local shown = false\n"
        "function response(status, headers, body)\n"
        "  if status ~= 200 and not shown then shown = true\n"
        '    io.stderr:write("non-2xx: " .. status .. " " .. body:sub(1, 200) .. "\\n") end\n'
        "end\n"
    )
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_TOKEN": token},
    )


def parse_wrk(out: str) -> dict[str, float]:
    def lat(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else 0.0

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": lat("50"),
        "p99": lat("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


def sequential_p50(port: int, token: str, n: int = 400) -> float:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", REQ_BODY, headers)
        r = c.getresponse()
        r.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200, r.status
    c.close()
    return statistics.median(times[50:])


async def redis_roundtrip_us(url: str, n: int = 2000) -> float:
    from keyguard.domain.limits import Limits
    from keyguard.domain.pricing import Estimate
    from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async

    lim = AsyncRedisLimiter(connect_async(url), prefix=f"bench:{secrets.token_hex(4)}:")
    limits = Limits(rpm=10**9, tpm=10**12, budget_nano=10**15)
    est = Estimate(tokens=30, cost_nano=1000)
    times = []
    for _ in range(n):
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        res = await lim.reserve("bench", limits, est, now)
        await lim.settle(res, 16, 900, now)
        times.append((time.perf_counter() - t0) * 1e6)
    await lim.aclose()
    return statistics.median(times[100:])


async def admission_us(redis_url: str | None, n: int = 5000) -> float:
    """p50 µs of the whole limits step for one request, outside the server: estimate +
    reserve + usage tap over the response + settle (in-process, or against Redis)."""
    from keyguard.domain.records import VirtualKey
    from keyguard.gateway.forward import PreparedBody
    from keyguard.gateway.limits import Admission
    from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter
    from keyguard.limits.prices import shipped_prices
    from keyguard.limits.redis_async import AsyncRedisLimiter, connect_async

    limiter: Any = (
        AsyncRedisLimiter(connect_async(redis_url), prefix=f"bench:{secrets.token_hex(4)}:")
        if redis_url
        else AsyncMemoryLimiter(MemoryLimiter())
    )
    adm = Admission(limiter, shipped_prices())
    key = VirtualKey(
        key_id="benchkey",
        name="b",
        upstream="default",
        created_at=datetime.now(timezone.utc),
        rpm=10**8,
        tpm=10**10,
        budget_usd=1e6,
    )
    req, resp = REQ_BODY.encode(), CHAT_BODY.encode()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        now = datetime.now(timezone.utc)
        ticket = await adm.admit(
            key, "/v1/chat/completions", PreparedBody(data=req, model="m"), now, len(req)
        )
        ticket.tap.start(200, [(b"content-type", b"application/json")], len(resp))
        ticket.tap.feed(resp)
        ticket.tap.end()
        await adm._finish(ticket, now, True)
        times.append((time.perf_counter() - t0) * 1e6)
    await adm.aclose()
    return statistics.median(times[n // 10 :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32, help="connections per replica")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians shown)")
    ap.add_argument("--replica", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replica:
        replica_main(args.replica[0], int(args.replica[1]))
        return
    for tool in ("nginx", "wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found")

    import psycopg

    from keyguard.config import load_settings
    from keyguard.crypto.master import MasterKey
    from keyguard.domain.records import KeySpec
    from keyguard.domain.secret import Secret
    from keyguard.wiring import create_vault

    work = Path(tempfile.mkdtemp(prefix="kg-bench-replicas-"))
    schema = f"kg_bench_{secrets.token_hex(4)}"
    procs: list[subprocess.Popen[bytes]] = []
    up_port, redis_port = free_port(), free_port()
    (work / "tmp").mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        f"worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.log warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; client_body_temp_path {work}/tmp;\n"
        f"  server {{ listen 127.0.0.1:{up_port}; keepalive_requests 1000000;\n"
        f"    location / {{ default_type application/json; return 200 '{CHAT_BODY}'; }} }} }}\n"
    )
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"]))
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(work),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        time.sleep(0.5)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
        env.update(
            KEYGUARD_HOME=str(work / "home"),
            KEYGUARD_DATABASE_URL=f"{PG_URL}?schema={schema}",
            KEYGUARD_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            KEYGUARD_MASTER_KEY=MasterKey.generate().to_base64(),
        )
        vault = create_vault(load_settings(env=env), env)
        real = "sk-bench-" + secrets.token_hex(24)
        vault.add_upstream(
            "default",
            Secret(real),
            base_url=f"http://127.0.0.1:{up_port}/v1",
            allow_insecure_loopback=True,
            validate_key=False,
        )
        _, token = vault.create_key(
            KeySpec(name="bench", upstream="default", rpm=10**8, tpm=10**10, budget_usd=10**6)
        )
        tok = token.reveal()
        vault.close()

        modes = ("off", "memory", "redis")
        ports = {m: [free_port(), free_port()] for m in modes}
        reps = [
            subprocess.Popen(
                [sys.executable, __file__, "--replica", m, str(p)],
                env={**os.environ, **env},
                stderr=subprocess.DEVNULL,
            )
            for m in modes
            for p in ports[m]
        ]
        rounds: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        try:
            for m in modes:
                for p in ports[m]:
                    wait_http(p)
                    run_wrk(p, args.conns, 1, tok, work).communicate()  # warm-up
            # the machine is shared: interleave the modes and take medians over the rounds
            for _ in range(args.rounds):
                for m in modes:
                    runs = [run_wrk(p, args.conns, args.duration, tok, work) for p in ports[m]]
                    outs = [parse_wrk(r.communicate()[0]) for r in runs]
                    rounds[m].append(
                        {
                            "rps": sum(o["rps"] for o in outs),
                            "p50": max(o["p50"] for o in outs),
                            "p99": max(o["p99"] for o in outs),
                            "errors": sum(o["errors"] for o in outs),
                            "seq_p50": sequential_p50(ports[m][0], tok),
                        }
                    )
        finally:
            for r in reps:
                r.terminate()
            for r in reps:
                r.wait(20)
        results = {
            m: {k: statistics.median(r[k] for r in rounds[m]) for k in rounds[m][0]} for m in modes
        }
        rt = asyncio.run(redis_roundtrip_us(env["KEYGUARD_REDIS_URL"]))
        step_mem = asyncio.run(admission_us(None))
        step_redis = asyncio.run(admission_us(env["KEYGUARD_REDIS_URL"]))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n2 replicas x {args.conns} connections, {args.rounds} interleaved rounds of"
        f" {args.duration}s per mode (medians), {os.cpu_count()} cores shared"
    )
    print(
        f"{'limits':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'1-conn p50 ms':>14}"
    )
    for mode, r in results.items():
        print(
            f"{mode:8} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:8.0f}"
            f" {r['seq_p50']:14.3f}"
        )
    off = results["off"]["seq_p50"]
    print(
        f"added latency per request (1 connection, p50): memory "
        f"{(results['memory']['seq_p50'] - off) * 1000:+.0f} µs, redis "
        f"{(results['redis']['seq_p50'] - off) * 1000:+.0f} µs"
    )
    print(f"Redis reserve+settle (2 EVALSHA round trips) from asyncio, p50: {rt:.0f} µs")
    print(
        f"whole limits step per request (estimate, reserve, usage tap, settle), p50: "
        f"in-process {step_mem:.0f} µs, Redis {step_redis:.0f} µs"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
