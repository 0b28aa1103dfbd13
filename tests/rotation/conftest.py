"""Fixtures of the rotation tests: a fake OpenAI platform over HTTPS (trustme CA), a real vault on
SQLite with an admin key, and a rotator wired like the CLI wires it.

Sentinel: at the end of each test that uses ``platform``, no admin key value and no service
account key value may appear in the audit log or in any log line.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from fakes.admin_api import FakeOpenAIPlatform
from keyguard.config import load_settings
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import UpstreamCredential
from keyguard.domain.rotation import ServiceAccountLink
from keyguard.domain.secret import Secret
from keyguard.rotation.admin_api import Endpoint, tls_context
from keyguard.rotation.upstream import RotationPolicy, UpstreamRotator
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from keyguard.wiring import create_vault

PROJECT = "proj_keyguardtest"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_info)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture
def platform(ca: trustme.CA) -> Iterator[FakeOpenAIPlatform]:
    with FakeOpenAIPlatform(ca, project_id=PROJECT) as p:
        yield p
    p.assert_clean()


@pytest.fixture
def ssl_ctx(ca_bundle: Path) -> ssl.SSLContext:
    return tls_context(ca_bundle)


@pytest.fixture
def connect(ssl_ctx: ssl.SSLContext) -> Any:
    def make(cred: UpstreamCredential) -> Endpoint:
        return Endpoint(cred.base_url, ssl_context=ssl_ctx, timeout=5.0)

    return make


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "vault.db"


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def vault(
    db_path: Path, master: MasterKey, platform: FakeOpenAIPlatform, log_lines: list[str]
) -> Iterator[Vault]:
    """A vault whose upstream 'default' holds a key of a service account created "in the
    dashboard" (linked with --current-service-account), plus the admin key."""
    v = Vault.create(SqliteStore(db_path), master, actor="tester", source="test")
    first = platform.add_service_account("created-in-dashboard")
    v.add_upstream("default", Secret(first.key.value), base_url=platform.base_url,
                   project=PROJECT)
    v.set_admin_key("default", Secret(platform.new_admin_key()), project_id=PROJECT)
    v.store.add_service_account(
        ServiceAccountLink("default", 1, PROJECT, first.id, first.key.id, v.now())
    )
    yield v
    # ---- sentinel: no key value in the audit log or the logs ----
    values = list(platform.admin_keys) + [
        a.key.value for a in platform.projects[PROJECT].values()
    ]
    records = repr(v.audit.list())
    assert not [x for x in values if x in records], "key value in the audit log"
    assert not [x for x in values for line in log_lines if x in line], "key value in logs"
    v.close()


def rotator(vault: Vault, connect: Any, grace: float = 0.0, max_grace: float = 3600.0,
            **kw: Any) -> UpstreamRotator:
    policy = RotationPolicy(grace=timedelta(seconds=grace), max_grace=timedelta(seconds=max_grace))
    return UpstreamRotator(vault, connect, policy=policy, actor="tester", source="test", **kw)


@pytest.fixture
def home_env(tmp_path: Path, ca_bundle: Path, platform: FakeOpenAIPlatform) -> dict[str, str]:
    """A keyguard home with a vault: upstream 'default' (a dashboard-made service account's key,
    linked) and the admin key; returns the environment to run keyguard in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGUARD_", "OPENAI_"))}
    env.update(KEYGUARD_HOME=str(tmp_path / "home"), KEYGUARD_MASTER_KEY=MasterKey.generate()
               .to_base64(), KEYGUARD_UPSTREAM_CA_BUNDLE=str(ca_bundle))
    settings = load_settings({"home": tmp_path / "home"})
    vault = create_vault(settings, env)
    first = platform.add_service_account("created-in-dashboard")
    vault.add_upstream("default", Secret(first.key.value), base_url=platform.base_url,
                       project=PROJECT)
    vault.set_admin_key("default", Secret(platform.new_admin_key()), project_id=PROJECT)
    vault.store.add_service_account(
        ServiceAccountLink("default", 1, PROJECT, first.id, first.key.id, vault.now()))
    vault.close()
    return env
