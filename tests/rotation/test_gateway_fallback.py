"""The gateway falls back to PREVIOUS when the upstream answers 401 for CURRENT, and alerts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.domain.records import KeySpec, Label
from keyguard.domain.secret import Secret
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.vault import Vault


@pytest.fixture
def gateway(vault: Vault, ca_bundle: Path) -> Iterator[RunningGateway]:
    config = GatewayConfig(host="127.0.0.1", port=0, upstream_ca_bundle=ca_bundle,
                           credential_ttl=0.1, upstream_timeout=5.0, audit_interval=0.02)
    with run_in_thread(config, vault) as gw:
        yield gw


def chat(gw: RunningGateway, token: str) -> str | None:
    with openai.OpenAI(api_key=token, base_url=gw.url + "/v1", max_retries=0) as client:
        r = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    return r.choices[0].message.content


def test_401_for_current_falls_back_to_previous_with_alert(
    vault: Vault, platform: FakeOpenAIPlatform, gateway: RunningGateway, log_lines: list[str]
) -> None:
    _, token = vault.create_key(KeySpec(name="app", upstream="default"))
    assert chat(gateway, token.reveal()) == "Hello from fake"
    broken = platform.add_service_account("revoked-too-early").key.value
    platform.forced_401.add(broken)  # e.g. a new key OpenAI has not activated yet
    vault.add_upstream_version("default", Secret(broken), label=Label.CURRENT)
    # the gateway caches routes for credential_ttl (0.1 s): keep asking until it has picked up
    # the new CURRENT (every answer must still succeed, through the fallback)
    deadline = time.monotonic() + 5.0
    while not platform.rejected and time.monotonic() < deadline:
        assert chat(gateway, token.reveal()) == "Hello from fake"
        time.sleep(0.02)
    assert platform.rejected, "CURRENT was never tried"
    for _ in range(3):
        assert chat(gateway, token.reveal()) == "Hello from fake"
    gateway.flush_audit()
    records = vault.audit.list()
    alerts = [r for r in records if r.action == "upstream.fallback"]
    assert alerts and alerts[0].outcome == "alert" and alerts[0].details["used_version"] == 1
    assert any("ALERT" in line and "PREVIOUS" in line for line in log_lines)
    served = [r.details["upstream_version"] for r in records if r.action == "gateway.request"]
    assert served[-1] == 1


def test_no_fallback_without_previous(
    vault: Vault, platform: FakeOpenAIPlatform, gateway: RunningGateway
) -> None:
    _, token = vault.create_key(KeySpec(name="app", upstream="default"))
    _, current = vault.upstream_secret("default")
    platform.forced_401.add(current.reveal())
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, token.reveal())


def test_no_fallback_to_a_compromised_previous(
    vault: Vault, platform: FakeOpenAIPlatform, gateway: RunningGateway, log_lines: list[str]
) -> None:
    _, token = vault.create_key(KeySpec(name="app", upstream="default"))
    assert chat(gateway, token.reveal()) == "Hello from fake"
    broken = platform.add_service_account("not-active-yet").key.value
    platform.forced_401.add(broken)
    vault.add_upstream_version("default", Secret(broken), label=Label.CURRENT)
    # version 1 (now PREVIOUS, still accepted by the upstream) has leaked
    vault.mark_upstream_compromised("default", 1, "pasted in a public gist", actor="test")
    deadline = time.monotonic() + 5.0
    while not platform.rejected and time.monotonic() < deadline:
        try:
            chat(gateway, token.reveal())  # may still be served by the cached version 1 route
        except openai.AuthenticationError:
            break
        time.sleep(0.02)
    assert platform.rejected, "CURRENT was never tried"
    uses_before = len(platform.requests)
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            chat(gateway, token.reveal())
    assert len(platform.requests) == uses_before + 3  # CURRENT only: no replay with version 1
    gateway.flush_audit()
    assert not [r for r in vault.audit.list() if r.action == "upstream.fallback"]
    assert any("marked compromised and is not used" in line for line in log_lines)
