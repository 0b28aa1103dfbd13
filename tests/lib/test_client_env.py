"""openai_client() against an environment that would route the key elsewhere: real servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import keyguard
from keyguard.domain.keys import generate_openai_style_key


def _recording_server() -> tuple[ThreadingHTTPServer, list[str]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"object": "list", "data": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def servers() -> Iterator[tuple[str, list[str], str, list[str]]]:
    gateway, at_gateway = _recording_server()
    proxy, at_proxy = _recording_server()
    try:
        yield (
            f"http://127.0.0.1:{gateway.server_address[1]}/v1",
            at_gateway,
            f"http://127.0.0.1:{proxy.server_address[1]}",
            at_proxy,
        )
    finally:
        for s in (gateway, proxy):
            s.shutdown()
            s.server_close()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_plain_http_loopback_never_goes_through_a_proxy(
    servers: tuple[str, list[str], str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    """A proxy from the environment would get the key in clear text on its way to loopback."""
    url, at_gateway, proxy, at_proxy = servers
    monkeypatch.setenv(variable, proxy)
    monkeypatch.setenv("NO_PROXY", "")
    key = generate_openai_style_key("proj")
    client = keyguard.openai_client(
        api_key=keyguard.Secret(key), base_url=url, allow_insecure_loopback=True, max_retries=0
    )
    client.models.list()
    assert at_proxy == []
    assert at_gateway == [f"Bearer {key}"]


def test_base_url_from_the_process_environment_is_not_used_with_an_explicit_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``env=``, that mapping is the environment: os.environ's OPENAI_BASE_URL (unchecked
    plain http to another host) must not be picked up by the openai package behind our back."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://collector.example/v1")
    env = {"OPENAI_API_KEY": generate_openai_style_key("proj")}
    client = keyguard.openai_client(env=env, load_kwargs={"sources": ("env",)})
    assert str(client.base_url) == "https://api.openai.com/v1/"
    aclient = keyguard.async_openai_client(env=env, load_kwargs={"sources": ("env",)})
    assert str(aclient.base_url) == "https://api.openai.com/v1/"
