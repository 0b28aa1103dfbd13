"""The native data plane as a whole: keyguard-edge + supervisor + Python core (docs/edge.md).

The edge serves the common requests itself; these tests check what only the pair can show:
its records land in the audit chain and the usage counters, vault changes reach it, its own
limits hold, what it hands to the core still works, and ``keyguard serve --data-plane native``
runs and stops cleanly. (``KEYGUARD_TEST_DATA_PLANE=native`` runs the whole gateway suite
through the edge as well: see .ci/run.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import openai
import pytest

from fakes.edgebin import edge_binary
from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, request, wait_ready
from keyguard.config import load_settings
from keyguard.domain.limits import Limits
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.edge.run import RunningEdge, run_edge_in_thread
from keyguard.gateway.limits import Admission
from keyguard.limits.memory import AsyncMemoryLimiter, MemoryLimiter
from keyguard.limits.prices import load_prices
from keyguard.vault import Vault
from keyguard.wiring import create_vault, open_vault


@pytest.fixture(scope="module")
def limiter() -> Iterator[MemoryLimiter]:
    lim = MemoryLimiter().start()
    yield lim
    lim.close()


@pytest.fixture(scope="module")
def edge(
    gateway_config: GatewayConfig, vault: Vault, limiter: MemoryLimiter
) -> Iterator[RunningEdge]:
    admission = Admission(AsyncMemoryLimiter(limiter), load_prices(None))
    with run_edge_in_thread(
        gateway_config, vault, binary=edge_binary(), threads=2, limits=admission
    ) as e:
        yield e


def _client(edge: RunningEdge, token: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=token, base_url=edge.url + "/v1", max_retries=0)


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )


def test_edge_serves_audits_and_counts(
    edge: RunningEdge, vault: Vault, make_key: Any, limiter: MemoryLimiter, upstream: FakeOpenAI
) -> None:
    token = make_key(allowed_models=["gpt-4o*"], allowed_cidrs=["127.0.0.0/8", "::1/128"])
    key_id = token[3:15]
    edge.sync()
    before = edge.supervisor.intake.records
    with _client(edge, token) as client:
        r = _chat(client)
    assert r.choices[0].message.content == "Hello from fake"
    upstream.assert_clean()
    edge.flush_audit()
    assert edge.supervisor.intake.records == before + 1  # answered by the edge, not the core
    records = [r for r in vault.audit.list() if r.actor == f"key:{key_id}"]
    assert len(records) == 1
    rec = records[0]
    assert rec.action == "gateway.request"
    assert rec.subject == "POST /v1/chat/completions"
    assert rec.outcome == "ok"
    assert rec.details["status"] == 200
    assert rec.details["model"] == "gpt-4o-mini"
    assert rec.details["upstream"] == "default"
    assert isinstance(rec.details["upstream_version"], int)
    assert vault.audit.verify().ok
    # the fake reports usage: it is counted against the key like the core counts it
    usage = limiter.usage(key_id, Limits.of(vault.get_key(key_id)), datetime.now(timezone.utc))
    assert usage.tokens_last_minute > 0


def test_revocation_reaches_the_edge_quickly(
    edge: RunningEdge, vault: Vault, make_key: Any
) -> None:
    token = make_key()
    key_id = token[3:15]
    edge.sync()
    with _client(edge, token) as client:
        _chat(client)
        vault.revoke_key(key_id)
        t0 = time.monotonic()
        while True:
            try:
                _chat(client)
            except openai.AuthenticationError as exc:
                assert "revoked" in str(exc)
                break
            assert time.monotonic() - t0 < 1.0, "revocation did not reach the edge in 1 s"
            time.sleep(0.02)


def test_rate_limit_counted_at_the_edge(edge: RunningEdge, make_key: Any) -> None:
    token = make_key(rpm=2)
    edge.sync()
    before = edge.supervisor.intake.records
    with _client(edge, token) as client:
        _chat(client)
        _chat(client)
        with pytest.raises(openai.RateLimitError) as info:
            _chat(client)
    assert info.value.response.headers["retry-after"]
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    edge.flush_audit()
    assert edge.supervisor.intake.records == before + 3  # all three answered by the edge


def test_handed_to_the_core_still_works(edge: RunningEdge, make_key: Any) -> None:
    """A streamed completion goes to the core (it asks the upstream for the usage chunk)."""
    token = make_key()
    edge.sync()
    before = edge.supervisor.intake.records
    with _client(edge, token) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    edge.flush_audit()
    assert edge.supervisor.intake.records == before


def test_bad_key_is_refused_by_the_core_path(edge: RunningEdge, make_key: Any) -> None:
    token = make_key()
    bad = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with _client(edge, bad) as client, pytest.raises(openai.AuthenticationError):
        _chat(client)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Addr:
    def __init__(self, port: int) -> None:
        self.port = port


def test_serve_native_process(
    tmp_path: Path, upstream: FakeOpenAI, real_key: str, ca_bundle: Path, transcript: Transcript
) -> None:
    binary = edge_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    env.update(
        {
            "KEYGUARD_HOME": str(tmp_path / "home"),
            "KEYGUARD_UPSTREAM_CA_BUNDLE": str(ca_bundle),
            "KEYGUARD_WORKERS": "2",
            "KEYGUARD_DATA_PLANE": "native",
            "KEYGUARD_EDGE_BINARY": str(binary),
        }
    )
    settings = load_settings(env=env)
    vault = create_vault(settings, env)
    vault.add_upstream("default", Secret(real_key), base_url=upstream.base_url)
    _, token = vault.create_key(KeySpec(name="cli", upstream="default", rpm=1000))
    vault.close()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from keyguard.cli.main import main; main()", "serve"]
        + ["--port", str(port), "--rotation-interval", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(proc, port, 30)
        for _ in range(4):
            r = request(
                _Addr(port), "GET", "/v1/models", token=token.reveal(), transcript=transcript
            )
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
    transcript.add(out)
    transcript.add(err)
    assert proc.returncode == 0, err
    assert b"native edge" in err
    assert real_key.encode() not in out + err
    assert token.reveal().encode() not in out + err
    vault = open_vault(settings, env)
    try:
        records = [r for r in vault.audit.list() if r.action == "gateway.request"]
        assert len([r for r in records if r.subject == "GET /v1/models"]) == 4
        assert vault.audit.verify().ok
    finally:
        vault.close()
