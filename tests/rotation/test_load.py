"""Rotation under load: continuous traffic through the real gateway with the official openai SDK
while an upstream rotation and a virtual-key rotation happen -> zero failed requests; after
retirement the old upstream key is rejected by the (fake) upstream. Bounded to a few seconds."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import KeySpec, Label
from keyguard.domain.rotation import RotationState
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import run_in_thread
from keyguard.rotation.admin_api import AdminApiError, check_key
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from rotation.conftest import rotator

CLIENTS = 3


class Traffic:
    """Client threads calling chat.completions in a loop; any exception is a failure."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        clients: dict[str, openai.OpenAI] = {}
        while not self.stop.is_set():
            token = self.token  # switches to the rotated key mid-run
            client = clients.get(token)
            if client is None:
                client = clients[token] = openai.OpenAI(
                    api_key=token, base_url=self.base_url, max_retries=0, timeout=10
                )
            try:
                r = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
                assert r.choices[0].message.content == "Hello from fake"
                with self._lock:
                    self.ok += 1
            except Exception as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:300])
        for c in clients.values():
            c.close()

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def wait_for(traffic: Traffic, more: int, timeout: float = 10.0) -> None:
    target = traffic.ok + more
    deadline = time.monotonic() + timeout
    while traffic.ok < target and time.monotonic() < deadline and not traffic.failures:
        time.sleep(0.02)


@pytest.mark.slow
def test_rotations_under_load_fail_no_request(
    vault: Vault, platform: FakeOpenAIPlatform, connect: Any, db_path: Path, master: MasterKey,
    ca_bundle: Path,
) -> None:
    _, token = vault.create_key(KeySpec(name="load", upstream="default"))
    gateway_vault = Vault.open(SqliteStore(db_path), master, source="gateway",
                               audit_reveals=False)
    config = GatewayConfig(host="127.0.0.1", port=0, upstream_ca_bundle=ca_bundle,
                           credential_ttl=0.2, upstream_timeout=10.0, audit_interval=0.05,
                           throttle_burst=1000)
    _, old_upstream = vault.upstream_secret("default")
    with run_in_thread(config, gateway_vault) as gw, Traffic(gw.url + "/v1", token.reveal()) as t:
        wait_for(t, 20)
        # upstream rotation: the new key becomes CURRENT while requests keep flowing
        rot = rotator(vault, connect, grace=1.0, max_grace=30.0)
        r = rot.start("default")
        assert r.state is RotationState.FINISHED
        wait_for(t, 20)
        # virtual-key rotation: the old token keeps working during its grace window
        _, new_token = vault.rotate_key(_key_id(vault), grace=timedelta(seconds=60))
        wait_for(t, 20)
        t.token = new_token.reveal()  # clients move to the new token
        wait_for(t, 20)
        deadline = time.monotonic() + 15
        while r.state is RotationState.FINISHED and time.monotonic() < deadline:
            time.sleep(0.3)
            nxt = rot.resume("default")
            assert nxt is not None
            r = nxt
        assert r.state is RotationState.RETIRED, r
        wait_for(t, 20)
        gw.flush_audit()
    assert not t.failures, t.failures[:5]
    assert t.ok >= 100
    cred = vault.get_upstream("default")
    assert cred.version_with(Label.PREVIOUS) is None
    with pytest.raises(AdminApiError) as err:
        check_key(connect(cred), old_upstream)  # the retired key is dead at the upstream
    assert err.value.http_status == 401
    # traffic really used both upstream versions
    versions = {rec.details.get("upstream_version") for rec in vault.audit.list()
                if rec.action == "gateway.request"}
    assert {1, 2} <= versions
    gateway_vault.close()


def _key_id(vault: Vault) -> str:
    return next(k.key_id for k in vault.list_keys() if k.name == "load")
