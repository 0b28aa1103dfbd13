"""TLS termination and mTLS on the client side of the gateway."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme

from fakes.rawhttp import Transcript, read_responses
from keyguard.gateway.config import GatewayConfig
from keyguard.gateway.server import RunningGateway, run_in_thread
from keyguard.vault import Vault


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(
    ca: trustme.CA, client_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    return {"cert": d / "cert.pem", "key": d / "key.pem", "client_ca": d / "client-ca.pem"}


@pytest.fixture(scope="module")
def tls_gateway(
    gateway_config: GatewayConfig, vault: Vault, tls_files: dict[str, Path]
) -> Iterator[RunningGateway]:
    cfg = replace(
        gateway_config, host="127.0.0.1", tls_cert=tls_files["cert"], tls_key=tls_files["key"]
    )
    with run_in_thread(cfg, vault) as gw:
        yield gw


@pytest.fixture(scope="module")
def mtls_gateway(
    gateway_config: GatewayConfig, vault: Vault, tls_files: dict[str, Path]
) -> Iterator[RunningGateway]:
    cfg = replace(
        gateway_config,
        host="127.0.0.1",
        tls_cert=tls_files["cert"],
        tls_key=tls_files["key"],
        client_ca=tls_files["client_ca"],
    )
    with run_in_thread(cfg, vault) as gw:
        yield gw


def _get(gw: RunningGateway, ctx: ssl.SSLContext, token: str) -> Any:
    with (
        socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
        )
        got = read_responses(s, 1)  # type: ignore[arg-type]
        return got[0] if got else None


def _refused(gw: RunningGateway, ctx: ssl.SSLContext, token: str) -> bool:
    try:
        return _get(gw, ctx, token) is None  # TLS 1.3: the alert may arrive on first read
    except (ssl.SSLError, OSError):
        return True


def test_tls_termination_with_sdk(
    tls_gateway: RunningGateway,
    ca: trustme.CA,
    make_key: Any,
    ca_bundle: Path,
    transcript: Transcript,
) -> None:
    assert tls_gateway.url.startswith("https://")
    http = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(ca_bundle)))
    with openai.OpenAI(
        api_key=make_key(), base_url=tls_gateway.url + "/v1", http_client=http, max_retries=0
    ) as client:
        ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids


def test_tls_contexts_are_strict(tls_files: dict[str, Path], ca_bundle: Path) -> None:
    from keyguard.gateway.http.tls import server_context, upstream_context

    up = upstream_context(ca_bundle)
    assert up.minimum_version == ssl.TLSVersion.TLSv1_2
    assert up.check_hostname and up.verify_mode == ssl.CERT_REQUIRED
    assert upstream_context(None).verify_mode == ssl.CERT_REQUIRED
    srv = server_context(tls_files["cert"], tls_files["key"], tls_files["client_ca"])
    assert srv.minimum_version == ssl.TLSVersion.TLSv1_2
    assert srv.verify_mode == ssl.CERT_REQUIRED


def test_mtls_requires_client_certificate(
    mtls_gateway: RunningGateway, ca: trustme.CA, client_ca: trustme.CA, make_key: Any
) -> None:
    token = make_key()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    assert _refused(mtls_gateway, ctx, token)  # no client certificate

    other = trustme.CA().issue_cert("intruder@example.com")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    other.configure_cert(ctx)
    assert _refused(mtls_gateway, ctx, token)  # certificate from another CA

    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    client_ca.issue_cert("app@example.com").configure_cert(ctx)
    assert _get(mtls_gateway, ctx, token).status == 200
