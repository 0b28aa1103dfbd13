"""Stack comparison for the gateway's wire level: the same minimal proxy on two stacks.

Each proxy does only the hop: accept the request, swap ``Authorization``, forward over a
keep-alive pool, stream the response back. No keyguard checks, no audit. One process each,
measured with wrk against an nginx upstream returning a fixed chat completion, in one run:

* ``keyguard-wire``: keyguard.gateway.http (asyncio protocols + httptools, uvloop) — what the
  gateway uses;
* ``aiohttp``: aiohttp web server + aiohttp ClientSession (uvloop), the usual alternative.

Run by hand (needs nginx, wrk, and ``pip install aiohttp`` in the venv)::

    .venv/bin/python bench/gateway_stacks/stacks.py [--duration 5] [--conns 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import gateway as bench  # noqa: E402  (bench/gateway.py: nginx config, wrk runner)

PROXY_KG = bench.HOP_SCRIPT  # the same minimal hop bench/gateway.py measures

PROXY_AIOHTTP = r"""
import asyncio, sys, uvloop
from aiohttp import web, ClientSession, TCPConnector
up_port, port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization"}
async def main():
    session = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=60))
    async def handle(request):
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers["Authorization"] = "Bearer " + key
        async with session.request(request.method, f"http://127.0.0.1:{up_port}{request.path_qs}",
                                   headers=headers, data=body, allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in HOP})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()
    from keyguard.domain.keys import generate_openai_style_key

    key = generate_openai_style_key()
    work = Path(tempfile.mkdtemp(prefix="kg-stacks-"))
    up, sse, ngx = bench.free_port(), bench.free_port(), bench.free_port()
    conf = bench.nginx_conf(work, up, sse, ngx, key, "unused", 1)
    procs = [subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])]
    try:
        ports = {}
        for name, script in (("keyguard-wire", PROXY_KG), ("aiohttp", PROXY_AIOHTTP)):
            port = bench.free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", script, str(up), str(port), key]))
            ports[name] = (port, procs[-1].pid)
        for port in [up] + [p for p, _ in ports.values()]:
            bench.wait_port(port)
        time.sleep(0.5)
        print(f"# load: {os.getloadavg()}  conns: {args.conns}  one process each")
        targets = {"direct": (up, None), "nginx": (ngx, procs[0].pid), **ports}
        for name, (port, pid) in targets.items():
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            token = "unused"
            bench.run_wrk(url, args.conns, 1, token, work)
            pids = bench.family(pid) if pid else []
            c0 = bench.cpu_seconds(pids)
            r = bench.run_wrk(url, args.conns, args.duration, token, work)
            cpu = (bench.cpu_seconds(pids) - c0) / max(r["requests"], 1) * 1e6 if pid else 0.0
            print(
                f"{name:14s} {r['rps']:9.0f} req/s  p50 {r['p50']:7.3f} ms  "
                f"p99 {r['p99']:7.3f} ms  cpu {cpu:6.1f} us/req",
                flush=True,
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        asyncio.run(asyncio.sleep(0))


if __name__ == "__main__":
    main()
