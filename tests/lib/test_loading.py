"""load_api_key and openai_client: real files, a real keyring backend, a real TLS server."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keyring
import pytest
import trustme
from keyring.backend import KeyringBackend

import keyguard
from keyguard import KeyFormatError, KeyNotConfigured, load_api_key
from keyguard.config import ConfigError
from keyguard.domain.keys import generate_openai_style_key, generate_virtual_key
from keyguard.loading import check_base_url


def test_env_first(tmp_path: Path) -> None:
    k1, k2 = generate_openai_style_key("proj"), generate_openai_style_key("proj")
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={k2}\n")
    s = load_api_key(env={"OPENAI_API_KEY": k1}, dotenv_path=tmp_path / ".env")
    assert s.reveal() == k1


def test_dotenv_when_env_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_openai_style_key("svcacct")
    (tmp_path / ".env").write_text(f"# comment\nOPENAI_API_KEY='{key}'\n")
    monkeypatch.chdir(tmp_path)
    s = load_api_key(env={}, sources=("env", "dotenv"))
    assert s.reveal() == key


def test_missing_key_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyNotConfigured) as info:
        load_api_key("MY_KEY", env={}, sources=("env", "dotenv"))
    msg = str(info.value)
    assert "MY_KEY is not set" in msg and ".env" in msg and "keyguard upstream add" in msg


@pytest.mark.parametrize("mangle", [
    lambda k: k[:30],
    lambda k: " " + k,
    lambda k: k.replace("sk-", "pk-", 1),
    lambda k: k[:50] + "$" + k[51:],
])
def test_malformed_key_never_echoed(mangle: object) -> None:
    key = generate_openai_style_key("proj")
    bad = mangle(key)  # type: ignore[operator]
    with pytest.raises(KeyFormatError) as info:
        load_api_key(env={"OPENAI_API_KEY": bad}, sources=("env",))
    msg = str(info.value)
    assert bad not in msg and bad.strip()[:40] not in msg
    assert "environment variable OPENAI_API_KEY" in msg


def test_virtual_keys_accepted_and_checksum_checked() -> None:
    _, token = generate_virtual_key()
    assert load_api_key("KG", env={"KG": token}, sources=("env",)).reveal() == token
    typo = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(KeyFormatError):
        load_api_key("KG", env={"KG": typo}, sources=("env",))


class MemoryKeyring(KeyringBackend):
    """A real keyring backend held in memory (the third-party edge, not our code)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.data.pop((service, username), None)


def test_keyring_source() -> None:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        key = generate_openai_style_key("proj")
        keyring.set_password("keyguard", "OPENAI_API_KEY", key)
        assert load_api_key(env={}, sources=("keyring",)).reveal() == key
    finally:
        keyring.set_keyring(previous)


@pytest.mark.parametrize(("url", "ok"), [
    ("https://api.openai.com/v1", True),
    ("http://api.openai.com/v1", False),
    ("http://10.0.0.5:8787/v1", False),
    ("ftp://x/v1", False),
    ("http://127.0.0.1:8787/v1", True),
    ("http://[::1]:8787/v1", True),
    ("http://localhost:8787/v1", True),
])
def test_base_url_policy(url: str, ok: bool) -> None:
    if ok:
        assert check_base_url(url, allow_insecure_loopback=True) == url
    else:
        with pytest.raises(ConfigError):
            check_base_url(url, allow_insecure_loopback=True)
    if url.startswith("http://127"):
        with pytest.raises(ConfigError, match="allow_insecure_loopback"):
            check_base_url(url)


# --- a real HTTPS server with a test CA -------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # failed TLS handshakes are the point of some tests

    server = QuietServer(("127.0.0.1", 0), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    _Handler.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1", ca_path
    finally:
        server.shutdown()
        server.server_close()


def test_openai_client_verifies_tls_and_picks_up_rotation(https_server: tuple[str, Path]) -> None:
    url, ca = https_server
    env = {"OPENAI_API_KEY": generate_openai_style_key("proj")}
    first = env["OPENAI_API_KEY"]
    client = keyguard.openai_client(base_url=url, ca_bundle=ca, env=env, refresh=0.0,
                                    load_kwargs={"sources": ("env",)}, max_retries=0)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    env["OPENAI_API_KEY"] = generate_openai_style_key("proj")  # rotated
    client.models.list()
    assert _Handler.seen == [f"Bearer {first}", f"Bearer {env['OPENAI_API_KEY']}"]


def test_openai_client_rejects_unknown_ca(https_server: tuple[str, Path]) -> None:
    import openai

    url, _ = https_server
    env = {"OPENAI_API_KEY": generate_openai_style_key("proj")}
    client = keyguard.openai_client(base_url=url, env=env, load_kwargs={"sources": ("env",)},
                                    max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    assert _Handler.seen == []


async def _async_list(client: object) -> list[str]:
    page = await client.models.list()  # type: ignore[attr-defined]
    return [m.id for m in page.data]


def test_async_client(https_server: tuple[str, Path]) -> None:
    import asyncio

    url, ca = https_server
    key = generate_openai_style_key("proj")
    client = keyguard.async_openai_client(
        api_key=keyguard.Secret(key), base_url=url, ca_bundle=ca, max_retries=0)
    assert asyncio.run(_async_list(client)) == ["gpt-4o-mini"]
    assert _Handler.seen == [f"Bearer {key}"]


def test_refuses_plain_string_key() -> None:
    with pytest.raises(TypeError):
        keyguard.openai_client(api_key=generate_openai_style_key("proj"))  # type: ignore[arg-type]
