"""``keyguard serve`` as a real process: settings from flags/env, workers, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, request, wait_ready
from keyguard.cli.main import cli
from keyguard.config import load_settings
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.wiring import create_vault, open_vault


class _Addr:
    def __init__(self, port: int) -> None:
        self.port = port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_help_lists_flags() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--tls-cert",
        "--client-ca",
        "--workers",
        "--trusted-proxy",
        "--upstream-ca-bundle",
        "--max-body-mb",
        "--header-timeout",
    ):
        assert flag in result.output


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_process(
    tmp_path: Path,
    upstream: FakeOpenAI,
    real_key: str,
    ca_bundle: Path,
    transcript: Transcript,
    workers: int,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env.update(
        {
            "KEYGUARD_HOME": str(tmp_path / "home"),
            "KEYGUARD_UPSTREAM_CA_BUNDLE": str(ca_bundle),
            "KEYGUARD_WORKERS": str(workers),
        }
    )
    settings = load_settings(env=env)
    vault = create_vault(settings, env)
    vault.add_upstream("default", Secret(real_key), base_url=upstream.base_url)
    _, token = vault.create_key(KeySpec(name="cli", upstream="default"))
    vault.close()

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from keyguard.cli.main import main; main()",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(proc, port, 20)
        for _ in range(4):
            r = request(
                _Addr(port), "GET", "/v1/models", token=token.reveal(), transcript=transcript
            )
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    transcript.add(out)
    transcript.add(err)
    assert proc.returncode == 0, err
    assert real_key.encode() not in out + err
    # orderly shutdown flushes the audit batch: every request is on record
    vault = open_vault(settings, env)
    try:
        records = [r for r in vault.audit.list() if r.action == "gateway.request"]
        assert len(records) == 4
        assert vault.audit.verify().ok
    finally:
        vault.close()
