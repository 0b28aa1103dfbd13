"""Fixtures for limits tests: the machine's Redis (127.0.0.1:6379) with a random key prefix.

Redis tests skip when Redis is unreachable, except under CI (env ``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fakes.fixtures import ca, ca_bundle, real_key, upstream  # noqa: F401 (fixtures)
from fakes.openai_upstream import FakeOpenAI
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.gateway.config import GatewayConfig
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

REDIS_URL = os.environ.get("KEYGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    if not _reachable(client):
        client.close()
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL} (CI is set: not skipping)")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards."""
    p = f"kgtest:{secrets.token_hex(6)}:"
    yield p
    keys = list(redis_client.scan_iter(match=p + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


# ---- a real vault, the fake upstream and a gateway with limits ----------------------------


@pytest.fixture(scope="session")
def vault(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, real_key: str
) -> Iterator[Vault]:
    store = SqliteStore(tmp_path_factory.mktemp("vault") / "vault.db")
    v = Vault.create(store, MasterKey.generate())
    v.add_upstream("default", Secret(real_key), base_url=upstream.base_url)
    yield v
    v.close()


@pytest.fixture(scope="session")
def gateway_config(ca_bundle: Path) -> GatewayConfig:
    return GatewayConfig(
        host="127.0.0.1",
        port=0,
        upstream_ca_bundle=ca_bundle,
        upstream_timeout=5.0,
        throttle_burst=1000,
        audit_interval=0.02,
    )


@pytest.fixture
def make_key(vault: Vault) -> Callable[..., tuple[str, str]]:
    """``make_key(**spec) -> (key_id, token)`` for a new key on the default upstream."""

    def make(**spec: Any) -> tuple[str, str]:
        key, token = vault.create_key(
            KeySpec(name=f"k{time.monotonic_ns()}", upstream="default", **spec)
        )
        return key.key_id, token.reveal()

    return make
