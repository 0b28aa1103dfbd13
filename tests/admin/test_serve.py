"""``keyguard serve`` serves the admin API: a real process, an admin token made beforehand."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from fakes.openai_upstream import FakeOpenAI
from keyguard.cli.main import cli
from keyguard.config import load_settings
from keyguard.domain.secret import Secret
from keyguard.wiring import create_vault


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, ca_bundle: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env["KEYGUARD_HOME"] = str(tmp_path / "home")
    env["KEYGUARD_UPSTREAM_CA_BUNDLE"] = str(ca_bundle)
    return env


def test_serve_has_the_admin_api(
    tmp_path: Path, upstream: FakeOpenAI, real_key: str, ca_bundle: Path
) -> None:
    env = _env(tmp_path, ca_bundle)
    vault = create_vault(load_settings(env=env), env)
    vault.add_upstream("default", Secret(real_key), base_url=upstream.base_url)
    token = vault.create_admin_token("ops", "admin")[1].reveal()
    vault.close()
    port = _free_port()
    cmd = [sys.executable, "-m", "keyguard.cli", "serve", "--port", str(port),
           "--admin-cidr", "127.0.0.0/8", "--admin-cidr", "::1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "gateway did not become ready"
                time.sleep(0.1)
            auth = {"Authorization": f"Bearer {token}"}
            assert http.get("/admin/openapi.json").status_code == 200
            r = http.post("/admin/v1/keys", headers=auth, json={"name": "from-api"})
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            models = http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert models.status_code == 200
            usage_path = f"/admin/v1/keys/{r.json()['key_id']}/usage"
            for _ in range(40):  # the request is counted just after its response
                usage = http.get(usage_path, headers=auth).json()
                if usage["requests_last_minute"] == 1:
                    break
                time.sleep(0.05)
            assert usage["backend"] == "in-process"
            assert usage["requests_last_minute"] == 1  # live, from the gateway itself
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    for secret in (token, real_key, key):
        assert secret.encode() not in out + err


def test_serve_refuses_a_bad_admin_cidr(tmp_path: Path, ca_bundle: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--admin-cidr", "not-a-network"], env=_env(tmp_path, ca_bundle)
    )
    assert result.exit_code == 2 and "admin_cidrs" in result.output
