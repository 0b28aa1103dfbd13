"""A fake OpenAI upstream on loopback: GET /v1/models answers 200 for live keys, 401 else."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class FakeOpenAI(http.server.BaseHTTPRequestHandler):
    live: set[str] = set()
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        auth = self.headers.get("Authorization", "")
        FakeOpenAI.seen.append(self.path)
        if self.path == "/redirect/models":
            self.send_response(302)
            self.send_header("Location", "/v1/models")
            self.end_headers()
            return
        ok = self.path == "/v1/models" and auth.removeprefix("Bearer ") in FakeOpenAI.live
        body = (
            b'{"object":"list","data":[]}'
            if ok
            else (
                b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error",'
                b'"code":"invalid_api_key","param":null}}'
            )
        )
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
