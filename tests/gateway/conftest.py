"""Fixtures for gateway tests: a real vault on a SQLite file, a fake OpenAI over HTTPS, gateways.

Sentinel: every test's logs (keyguard loggers, captured at DEBUG for the whole session), every
audit record, every response a test helper received and every header the upstream got are
checked at the end of the session for the real upstream key, which must never appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from fakes.edgebin import DATA_PLANE, edge_binary
from fakes.fixtures import ca, ca_bundle, real_key, upstream  # noqa: F401 (fixtures)
from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript
from keyguard.crypto.master import MasterKey
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.edge.run import run_edge_in_thread
from keyguard.gateway.http.framing import ServerLimits
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault

TEST_LIMITS = ServerLimits(
    max_header_bytes=8192, max_headers=64, max_body_bytes=4 * 1024 * 1024, header_timeout=1.0
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def transcript() -> Transcript:
    return Transcript()


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def vault(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI, real_key: str
) -> Iterator[Vault]:
    store = SqliteStore(tmp_path_factory.mktemp("vault") / "vault.db")
    v = Vault.create(store, MasterKey.generate())
    v.add_upstream(
        "default",
        Secret(real_key),
        base_url=upstream.base_url,
        organization="org-keyguardtest",
        project="proj_keyguardtest",
    )
    yield v
    v.close()


@pytest.fixture(scope="session")
def gateway_config(ca_bundle: Path) -> GatewayConfig:
    return GatewayConfig(
        host="::",
        port=0,
        upstream_ca_bundle=ca_bundle,
        upstream_timeout=1.0,
        limits=TEST_LIMITS,
        max_multipart_prefix=64 * 1024,
        throttle_burst=1000,
        audit_interval=0.02,
    )


@pytest.fixture(scope="session")
def gateway(
    gateway_config: GatewayConfig,
    vault: Vault,
    real_key: str,
    transcript: Transcript,
    log_lines: list[str],
) -> Iterator[RunningGateway]:
    with start_gateway(gateway_config, vault) as gw:
        yield gw
        gw.flush_audit()
    # ---- the sentinel: the real key never left the vault except towards the upstream ----
    time.sleep(0.1)
    records = vault.audit.list()
    assert records, "the gateway wrote no audit records"
    leaks = [r for r in records if real_key in repr(r)]
    assert not leaks, "real key in audit records"
    assert not [line for line in log_lines if real_key in line], "real key in logs"
    assert not [c for c in transcript.chunks if real_key.encode() in c], "real key sent to client"
    # and a fragment of it either (beyond OpenAI's own public prefix)
    fragment = real_key[12:40].encode()
    assert not [c for c in transcript.chunks if fragment in c]


def start_gateway(config: GatewayConfig, vault: Vault, **kwargs: Any) -> Any:
    """``run_in_thread``, or the native edge in front of it with ``KEYGUARD_TEST_DATA_PLANE``
    set to ``native`` (the edge must then answer exactly as the Python gateway does)."""
    if DATA_PLANE == "native":
        return run_edge_in_thread(config, vault, binary=edge_binary(), **kwargs)
    return run_in_thread(config, vault, **kwargs)


@pytest.fixture
def make_key(vault: Vault, request: pytest.FixtureRequest) -> Any:
    """``make_key(**spec) -> token`` for a new virtual key on the default upstream (behind the
    native edge: known to the edge when this returns, so the edge serves it)."""
    counter = iter(range(10**6))
    edge = request.getfixturevalue("gateway") if DATA_PLANE == "native" else None

    def make(upstream: str = "default", **spec: Any) -> str:
        name = f"k{next(counter)}-{time.monotonic_ns()}"
        _, token = vault.create_key(KeySpec(name=name, upstream=upstream, **spec))
        if edge is not None:
            edge.sync()
        return token.reveal()

    return make


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
