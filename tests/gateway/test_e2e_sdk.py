"""End to end: the official openai SDK -> keyguard -> fake OpenAI over verified HTTPS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from fakes.openai_upstream import FakeOpenAI
from fakes.rawhttp import Transcript, request
from keyguard.gateway.server import RunningGateway


@pytest.fixture
def sdk(
    gateway: RunningGateway, transcript: Transcript
) -> Iterator[Callable[[str], openai.OpenAI]]:
    """``sdk(token)``: a sync SDK client on the gateway that records what it receives."""
    clients: list[openai.OpenAI] = []

    def record(response: httpx.Response) -> None:
        transcript.add(repr(list(response.headers.raw)))
        if "text/event-stream" not in response.headers.get("content-type", ""):
            transcript.add(response.read())

    def make(token: str) -> openai.OpenAI:
        http = openai.DefaultHttpxClient(event_hooks={"response": [record]})
        client = openai.OpenAI(
            api_key=token, base_url=gateway.url + "/v1", http_client=http, max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def test_chat_completion_sync(
    sdk: Any, gateway: RunningGateway, make_key: Any, transcript: Transcript, upstream: FakeOpenAI
) -> None:
    client = sdk(make_key(allowed_models=["gpt-4o*"]))
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.choices[0].message.content == "Hello from fake"
    upstream.assert_clean()


def test_chat_streaming_sync(
    sdk: Any, gateway: RunningGateway, make_key: Any, transcript: Transcript
) -> None:
    client = sdk(make_key())
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    words = [c.choices[0].delta.content for c in stream]
    transcript.add("".join(w or "" for w in words))
    assert words == ["Hello", " from", " fake"]


def test_async_chat_and_stream(
    gateway: RunningGateway, make_key: Any, transcript: Transcript
) -> None:
    token = make_key()

    async def main() -> tuple[str | None, list[str | None]]:
        async with openai.AsyncOpenAI(
            api_key=token, base_url=gateway.url + "/v1", max_retries=0
        ) as client:
            plain, stream = await asyncio.gather(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                ),
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
                ),
            )
            words = [c.choices[0].delta.content async for c in stream]
            return plain.choices[0].message.content, words

    content, words = asyncio.run(main())
    transcript.add(repr((content, words)))
    assert content == "Hello from fake"
    assert words == ["Hello", " from", " fake"]


def test_responses_embeddings_models(
    sdk: Any, gateway: RunningGateway, make_key: Any, transcript: Transcript
) -> None:
    client = sdk(make_key())
    assert client.responses.create(model="gpt-4o-mini", input="hi").output_text == "Hello from fake"
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and emb.data[1].embedding == [0.1, 0.2, 0.3]
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "text-embedding-3-small"]


@pytest.mark.parametrize("restricted", [False, True])
def test_file_upload_streams_multipart(
    sdk: Any,
    gateway: RunningGateway,
    make_key: Any,
    transcript: Transcript,
    upstream: FakeOpenAI,
    restricted: bool,
) -> None:
    spec = {"allowed_models": ["gpt-4o*"]} if restricted else {}
    client = sdk(make_key(**spec))
    content = b'{"custom_id": "x"}\n' * 100_000  # ~1.9 MB: larger than the multipart prefix
    f = client.files.create(file=("batch.jsonl", content), purpose="batch")
    assert f.bytes == len(content)
    assert upstream.uploads[-1]["bytes"] == len(content)
    assert upstream.uploads[-1]["fields"]["purpose"] == b"batch"


def test_upstream_gets_real_key_and_credential_headers(
    gateway: RunningGateway, make_key: Any, transcript: Transcript, upstream: FakeOpenAI
) -> None:
    r = request(
        gateway,
        "GET",
        "/v1/test/headers",
        token=make_key(),
        transcript=transcript,
        headers={
            "OpenAI-Organization": "org-fromclient",
            "OpenAI-Project": "proj_client",
            "X-Forwarded-For": "10.1.1.1",
            "api-key": "something",
            "X-Custom": "kept",
            "Connection": "close, x-custom",
        },
    )
    assert r.status == 200
    report = r.json()
    assert report["values"]["openai-organization"] == "org-keyguardtest"
    assert report["values"]["openai-project"] == "proj_keyguardtest"
    assert report["values"]["host"] == f"127.0.0.1:{upstream.port}"
    assert "x-forwarded-for" not in report["names"]
    assert "api-key" not in report["names"]
    assert "x-custom" not in report["names"]  # named in Connection: hop-by-hop
    upstream.assert_clean()


def test_custom_header_passes_and_response_headers(
    gateway: RunningGateway, make_key: Any, transcript: Transcript
) -> None:
    r = request(
        gateway,
        "GET",
        "/v1/test/headers",
        token=make_key(),
        transcript=transcript,
        headers={"X-Custom": "kept"},
    )
    assert r.json()["values"]["x-custom"] == "kept"
    assert r.headers[b"x-request-id"] == b"req_fake"
    # the upstream account's identifiers stay with keyguard
    assert b"openai-organization" not in r.headers and b"openai-project" not in r.headers
