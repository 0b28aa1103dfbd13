"""Admin API security properties: secrets never stored raw, the failed-auth throttle is shared
with the proxy, the optional address allowlist, hashes domain-separated from virtual keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from admin.conftest import Client
from keyguard.domain.admin_tokens import generate_admin_token, parse_admin_token
from keyguard.gateway.admin.setup import admin_api
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.vault import Vault
from keyguard.vault.admin_tokens import admin_token_digest
from keyguard.vault.auth import secret_digest


def _files(db_path: Path) -> bytes:
    """The SQLite file and its WAL/shm companions, as they are on disk."""
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def test_tokens_and_keys_are_never_stored_raw(
    client: Client, admin: str, reader: str, vault: Vault, db_path: Path
) -> None:
    created = client.post("/admin/v1/keys", admin, json={"name": "raw-check"}).json()
    virtual_key = created["key"]
    data = _files(db_path)
    for secret in (admin, reader, virtual_key):
        parts = secret[4:] if secret.startswith("kga_") else secret[3:]
        assert secret.encode() not in data
        assert parts[12:56].encode() not in data  # the secret part alone, either
    # what is stored is the keyed hash
    token_id = parse_admin_token(admin).token_id
    stored = vault.store.get_admin_token(token_id)
    assert stored is not None and len(stored[1]) == 32


def test_admin_token_hash_is_domain_separated_from_virtual_keys() -> None:
    key = bytes(range(32))
    secret = parse_admin_token(generate_admin_token()[1]).secret
    assert admin_token_digest(key, secret) != secret_digest(key, secret)


@pytest.fixture
def strict_gateway(config: GatewayConfig, vault: Vault) -> Iterator[RunningGateway]:
    from dataclasses import replace

    strict = replace(config, throttle_burst=2, throttle_rate=0.01)
    with run_in_thread(strict, vault, admin=admin_api(vault)) as gw:
        yield gw


def test_failed_admin_auth_is_throttled_per_address(
    strict_gateway: RunningGateway, admin: str
) -> None:
    with httpx.Client(base_url=strict_gateway.url) as http:
        bad = {"Authorization": f"Bearer {generate_admin_token()[1]}"}
        good = {"Authorization": f"Bearer {admin}"}
        assert http.get("/admin/v1/keys", headers=good).status_code == 200
        assert [http.get("/admin/v1/keys", headers=bad).status_code for _ in range(2)] == [401] * 2
        r = http.get("/admin/v1/keys", headers=good)  # even a good token waits now
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "auth_throttled"
        # one throttle for the whole gateway: the proxy path refuses this address too
        assert http.get("/v1/models", headers={"Authorization": "Bearer x"}).status_code == 429


def test_admin_api_limited_to_configured_networks(
    config: GatewayConfig, vault: Vault, admin: str
) -> None:
    api = admin_api(vault, allowed_cidrs=("10.0.0.0/8", "fd00::/8"))
    with run_in_thread(config, vault, admin=api) as gw, httpx.Client(base_url=gw.url) as http:
        r = http.get("/admin/v1/keys", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_ip"
        assert http.get("/admin/openapi.json").status_code == 403
        assert http.get("/healthz").status_code == 200


def test_no_admin_api_without_admin(config: GatewayConfig, vault: Vault, admin: str) -> None:
    with run_in_thread(config, vault) as gw, httpx.Client(base_url=gw.url) as http:
        r = http.get("/admin/v1/keys", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 404
