"""Upstream rotation through the admin API in ``admin`` mode: keyguard creates the new key with
the upstream's OpenAI admin key on a fake OpenAI platform; no key value comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.crypto.master import MasterKey
from keyguard.domain.rotation import ServiceAccountLink
from keyguard.domain.secret import Secret
from keyguard.gateway.admin.setup import admin_api
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import run_in_thread
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

PROJECT = "proj_admintest"


@pytest.fixture
def platform(ca: trustme.CA) -> Iterator[FakeOpenAIPlatform]:
    with FakeOpenAIPlatform(ca, project_id=PROJECT) as p:
        yield p
    p.assert_clean()


def test_admin_mode_rotation(
    tmp_path: Path, platform: FakeOpenAIPlatform, config: GatewayConfig, ca_bundle: Path
) -> None:
    vault = Vault.create(SqliteStore(tmp_path / "v.db"), MasterKey.generate())
    first = platform.add_service_account("created-in-dashboard")
    vault.add_upstream(
        "default", Secret(first.key.value), base_url=platform.base_url, project=PROJECT
    )
    admin_key = platform.new_admin_key()
    vault.set_admin_key("default", Secret(admin_key), project_id=PROJECT)
    vault.store.add_service_account(
        ServiceAccountLink("default", 1, PROJECT, first.id, first.key.id, vault.now())
    )
    token = vault.create_admin_token("ops", "admin")[1].reveal()
    api = admin_api(vault, upstream_ca_bundle=ca_bundle)
    try:
        with run_in_thread(config, vault, admin=api) as gw, httpx.Client(base_url=gw.url) as http:
            auth = {"Authorization": f"Bearer {token}"}
            path = "/admin/v1/upstreams/default/rotate"
            r = http.post(path, headers=auth, json={"mode": "admin", "new_key": "x" * 40})
            assert r.status_code == 400  # admin mode makes the key itself
            r = http.post(path, headers=auth, json={"mode": "admin"}, timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["mode"] == "admin" and body["new_version"] == 2
            assert body["old_version"] == 1 and body["rotation_id"]
            values = [admin_key] + [a.key.value for a in platform.projects[PROJECT].values()]
            assert not [v for v in values if v in r.text]
            cred = vault.get_upstream("default")
            assert [v.version for v in cred.versions] == [1, 2]
            records = repr(vault.audit.list())
            assert not [v for v in values if v in records]
    finally:
        vault.close()
