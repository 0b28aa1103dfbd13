"""A fake OpenAI API served over real HTTPS (trustme test CA) on 127.0.0.1, for any test.

It speaks enough of OpenAI's wire format for the official SDK: chat completions (plain and SSE
streaming), responses, embeddings, models, multipart file upload; plus test endpoints: a redirect
(``/v1/test/redirect``), a stall that never answers (``/v1/test/stall``), a slow SSE stream that
notices the client leaving (``/v1/test/slow-stream``) and a header report
(``/v1/test/headers``, names only plus a few safe values).

It checks every request: the ``Authorization`` header must carry one of ``accepted_keys`` and no
keyguard virtual key may appear anywhere in the request. Violations are collected in
``violations``; :meth:`FakeOpenAI.assert_clean` fails the test on any.

Usage::

    with FakeOpenAI(ca, accepted_keys=[real_key]) as up:
        base_url = up.base_url  # https://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

_VK_RE = re.compile(rb"kg_[0-9a-z]{12}[0-9A-Za-z]{50}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ---- plumbing -----------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_fake")
        self.send_header("openai-organization", "org-keyguardtest")  # as OpenAI does
        self.send_header("openai-project", "proj_keyguardtest")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _check(self, body: bytes) -> bool:
        fake = self.server.fake
        raw_head = str(self.headers).encode()
        rec = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
        }
        fake.requests.append(rec)
        if _VK_RE.search(raw_head) or _VK_RE.search(body) or _VK_RE.search(self.path.encode()):
            fake.violations.append(f"virtual key reached the upstream on {self.path}")
        auth = self.headers.get("Authorization", "")
        if not any(auth == f"Bearer {k}" for k in fake.accepted_keys):
            fake.violations.append(f"request without the real key on {self.path}")
            self._json(
                401,
                {
                    "error": {
                        "message": incorrect_key_message(auth[7:]),
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "param": None,
                    }
                },
            )
            return False
        return True

    # ---- endpoints ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route(b"")

    def do_DELETE(self) -> None:
        self._route(b"")

    def do_POST(self) -> None:
        self._route(self._body())

    def _route(self, body: bytes) -> None:
        if not self._check(body):
            return
        path = self.path.split("?", 1)[0]
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/models": self._models,
            "/v1/files": self._files,
            "/v1/test/redirect": self._redirect,
            "/v1/test/stall": self._stall,
            "/v1/test/slow-stream": self._slow_stream,
            "/v1/test/headers": self._headers_report,
            "/v1/test/echo-size": self._echo_size,
            "/v1/test/close-delimited": self._close_delimited,
        }.get(path)
        if handler is None:
            self._json(
                404,
                {
                    "error": {
                        "message": "not found",
                        "type": "invalid_request_error",
                        "code": None,
                        "param": None,
                    }
                },
            )
            return
        handler(body)

    def _usage(self) -> dict[str, Any]:
        prompt, completion = self.server.fake.usage_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _chat(self, body: bytes) -> None:
        req = json.loads(body)
        created = int(time.time())
        self.server.fake.chat_bodies.append(req)
        include_usage = (req.get("stream_options") or {}).get("include_usage") is True
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, word in enumerate(["Hello", " from", " fake"]):
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req["model"],
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word}
                            if i
                            else {"role": "assistant", "content": word},
                            "finish_reason": None,
                        }
                    ],
                }
                if include_usage:  # like OpenAI: every chunk says usage null, then a final one
                    chunk["usage"] = None
                self._chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if include_usage:
                final = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req["model"],
                    "choices": [],
                    "usage": self._usage(),
                }
                self._chunk(b"data: " + json.dumps(final).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            return
        self._json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": req["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Hello from fake"},
                    }
                ],
                "usage": self._usage(),
            },
        )

    def _responses(self, body: bytes) -> None:
        req = json.loads(body)
        self._json(
            200,
            {
                "id": "resp_fake",
                "object": "response",
                "created_at": int(time.time()),
                "model": req["model"],
                "status": "completed",
                "output": [
                    {
                        "type": "message",
                        "id": "msg_fake",
                        "role": "assistant",
                        "status": "completed",
                        "content": [
                            {"type": "output_text", "text": "Hello from fake", "annotations": []}
                        ],
                    }
                ],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": self.server.fake.usage_tokens[0],
                    "output_tokens": self.server.fake.usage_tokens[1],
                    "total_tokens": sum(self.server.fake.usage_tokens),
                },
            },
        )

    def _embeddings(self, body: bytes) -> None:
        req = json.loads(body)
        inputs = req["input"] if isinstance(req["input"], list) else [req["input"]]
        self._json(
            200,
            {
                "object": "list",
                "model": req["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            },
        )

    def _models(self, body: bytes) -> None:
        self._json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in ("gpt-4o-mini", "text-embedding-3-small")
                ],
            },
        )

    def _files(self, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        m = re.search(r"boundary=(\S+)", ctype)
        fields: dict[str, bytes] = {}
        filename = ""
        size = 0
        if m:
            for part in body.split(b"--" + m.group(1).encode())[1:-1]:
                head, _, content = part.partition(b"\r\n\r\n")
                content = content[:-2]
                name = re.search(rb'name="([^"]*)"', head)
                fn = re.search(rb'filename="([^"]*)"', head)
                if fn:
                    filename, size = fn.group(1).decode(), len(content)
                elif name:
                    fields[name.group(1).decode()] = content
        self.server.fake.uploads.append({"filename": filename, "bytes": size, "fields": fields})
        self._json(
            200,
            {
                "id": "file-fake",
                "object": "file",
                "bytes": size,
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": fields.get("purpose", b"").decode(),
                "status": "processed",
            },
        )

    def _redirect(self, body: bytes) -> None:
        self.send_response(302)
        self.send_header("Location", "https://attacker.invalid/steal")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _stall(self, body: bytes) -> None:
        self.server.fake.stall_release.wait(30)
        self.close_connection = True

    def _slow_stream(self, body: bytes) -> None:
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(200):
                self._chunk(b'data: {"n": %d}\n\n' % i)
                time.sleep(0.05)
            self._chunk(b"")
        except OSError:
            fake.disconnects.set()  # the gateway dropped us: the client's disconnect reached us
            self.close_connection = True

    def _headers_report(self, body: bytes) -> None:
        names = sorted(k.lower() for k in self.headers)
        safe = {
            k: self.headers.get(k)
            for k in (
                "host",
                "openai-organization",
                "openai-project",
                "x-forwarded-for",
                "x-custom",
            )
        }
        self._json(200, {"names": names, "values": safe})

    def _close_delimited(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"until-close " * 1000)
        self.close_connection = True

    def _echo_size(self, body: bytes) -> None:
        self._json(
            200,
            {"bytes": len(body), "chunked": self.headers.get("Transfer-Encoding", "") == "chunked"},
        )


def masked(key: str) -> str:
    """A key as OpenAI quotes it in errors: prefix and first characters, stars, last four."""
    return f"{key[:8]}{'*' * 39}{key[-4:]}"


def incorrect_key_message(key: str) -> str:
    """OpenAI's 401 message, which quotes the masked key it was sent."""
    return (
        f"Incorrect API key provided: {masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


class FakeOpenAI:
    """The fake upstream; a context manager that serves on an ephemeral 127.0.0.1 port."""

    def __init__(
        self,
        ca: trustme.CA | None,
        accepted_keys: list[str],
        host: str = "127.0.0.1",
        cert_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.accepted_keys = list(accepted_keys)
        self.requests: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        #: (prompt, completion) tokens every chat/responses answer reports in ``usage``
        self.usage_tokens = (3, 3)
        #: parsed bodies of chat completion requests, as the upstream received them
        self.chat_bodies: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.stall_release = threading.Event()
        self.disconnects = threading.Event()
        self._server = _Server((host, 0), _Handler)
        self._server.fake = self
        scheme = "http"
        if ca is not None:  # ca=None: plain HTTP (for the loopback opt-in test)
            cert = ca.issue_cert(*cert_names)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ctx)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.port = self._server.server_address[1]
        self.base_url = f"{scheme}://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stall_release.set()
        self._server.shutdown()
        self._server.server_close()

    def assert_clean(self) -> None:
        assert not self.violations, self.violations
