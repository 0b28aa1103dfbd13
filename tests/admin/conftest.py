"""Fixtures of the admin API tests: a real gateway with the admin API over a real SQLite vault,
the fake OpenAI upstream over HTTPS, admin tokens of both scopes, and an httpx client that
keeps every response body for the end-of-session sentinel (no admin token, no upstream key, and
no virtual key outside the one-time create/rotate answers, in any response)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.fixtures import ca, ca_bundle, real_key, upstream  # noqa: F401 (fixtures)
from fakes.openai_upstream import FakeOpenAI
from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import VIRTUAL_KEY_RE
from keyguard.domain.secret import Secret
from keyguard.gateway.admin.setup import admin_api
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.http.framing import ServerLimits
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

LIMITS = ServerLimits(max_header_bytes=8192, max_body_bytes=1024 * 1024, header_timeout=2.0)


class Client:
    """An httpx client for the gateway that remembers every response and the secrets it was
    legitimately handed (one-time keys), for the sentinel."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.bodies: list[str] = []
        self.one_time: list[str] = []  # bodies that may carry a new virtual key

    def request(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        r = self.http.request(method, path, headers=headers, **kw)
        body = r.text
        if '"key": "kg_' in body or '"key":"kg_' in body:
            self.one_time.append(body)
        else:
            self.bodies.append(body)
        return r

    def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("GET", path, token, **kw)

    def post(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, token, **kw)


@pytest.fixture(scope="session")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vault") / "vault.db"


@pytest.fixture(scope="session")
def vault(db_path: Path, upstream: FakeOpenAI, real_key: str) -> Iterator[Vault]:
    v = Vault.create(SqliteStore(db_path), MasterKey.generate())
    v.add_upstream("default", Secret(real_key), base_url=upstream.base_url)
    yield v
    v.close()


@pytest.fixture(scope="session")
def config(ca_bundle: Path) -> GatewayConfig:
    return GatewayConfig(
        host="127.0.0.1",
        port=0,
        upstream_ca_bundle=ca_bundle,
        upstream_timeout=5.0,
        limits=LIMITS,
        throttle_burst=1000,
        audit_interval=0.02,
    )


@pytest.fixture(scope="session")
def tokens(vault: Vault) -> dict[str, str]:
    """``{"admin": kga_..., "read": kga_...}``, created through the vault."""
    out = {}
    for scope in ("admin", "read"):
        _, secret = vault.create_admin_token(f"test-{scope}", scope, actor="user:tester")
        out[scope] = secret.reveal()
    return out


@pytest.fixture(scope="session")
def gateway(
    config: GatewayConfig, vault: Vault, ca_bundle: Path, real_key: str, tokens: dict[str, str]
) -> Iterator[RunningGateway]:
    with run_in_thread(config, vault, admin=admin_api(vault, upstream_ca_bundle=ca_bundle)) as gw:
        yield gw


@pytest.fixture(scope="session")
def client(gateway: RunningGateway, real_key: str, tokens: dict[str, str]) -> Iterator[Client]:
    c = Client(gateway.url)
    yield c
    c.http.close()
    # ---- the sentinel ----
    for body in c.bodies + c.one_time:
        assert real_key not in body, "upstream key in an admin API response"
        assert real_key[12:40] not in body
        for token in tokens.values():
            assert token not in body, "admin token in a response"
            assert token[4:40] not in body
    for body in c.bodies:
        assert not VIRTUAL_KEY_RE.search(body), "a virtual key outside a one-time answer"


@pytest.fixture
def admin(tokens: dict[str, str]) -> str:
    return tokens["admin"]


@pytest.fixture
def reader(tokens: dict[str, str]) -> str:
    return tokens["read"]
