"""Learn what a request really used from the upstream's response, as it streams past.

* JSON responses: a copy of the body (up to ``max_json``) is parsed when it ends; gzip and
  deflate bodies are decompressed for that copy only.
* SSE streams: each event is checked for a ``usage`` object (the final chunk of a chat
  completion streamed with ``stream_options.include_usage``, or the ``response.completed``
  event of the Responses API). When keyguard asked for the usage chunk itself (the client did
  not), that chunk — the one with ``"choices": []`` and a ``usage`` — is removed, so the client
  sees exactly the stream it asked for.

:func:`request_usage_upstream` rewrites a streaming chat/completions request body to ask for
the usage chunk when the client did not.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any

from keyguard.domain.pricing import TokenUsage, usage_from_response

_STREAM_USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_MAX_EVENT = 1024 * 1024
#: how much of the end of a JSON body too big to parse is kept to find its ``usage``
_TAIL = 64 * 1024
_DECODER = json.JSONDecoder()


def request_usage_upstream(path: str, body: dict[str, Any]) -> bool:
    """Add ``stream_options.include_usage`` to a streaming request that lacks it (in place).

    Returns True when it did, i.e. the usage chunk must be stripped from the response.
    """
    if path not in _STREAM_USAGE_PATHS or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is None:
        body["stream_options"] = {"include_usage": True}
        return True
    if isinstance(options, dict) and options.get("include_usage") is not True:
        options["include_usage"] = True
        return True
    return False


class UsageTap:
    """Passes response bytes through (``feed``), noting the ``usage`` they report."""

    def __init__(self, *, strip_usage_chunk: bool = False, max_json: int = 4 * 1024 * 1024) -> None:
        self.strip = strip_usage_chunk
        self.usage: TokenUsage | None = None
        self.status = 0
        self._sse = False
        self._encoding = b"identity"
        self._max_json = max_json
        self._copy: list[bytes] = []
        self._size = 0
        self._pending = b""

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], content_length: int | None
    ) -> int | None:
        """Called with the response head; returns the content length to announce."""
        self.status = status
        for k, v in headers:
            if k == b"content-type":
                self._sse = v.split(b";", 1)[0].strip().lower() == b"text/event-stream"
            elif k == b"content-encoding":
                self._encoding = v.strip().lower()
        if self._sse and self.strip:
            return None  # we may drop bytes: the client gets a chunked response
        self.strip = self.strip and self._sse
        return content_length

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to pass on for ``chunk`` (all of it, unless an event is being stripped)."""
        if self.status >= 400:
            return chunk
        if not self._sse:
            if self._size + len(chunk) <= self._max_json:
                self._copy.append(chunk)
            else:  # too big to parse: keep the end, where OpenAI puts ``usage``
                self._copy = [b"".join([*self._copy, chunk])[-_TAIL:]]
            self._size += len(chunk)
            return chunk
        complete = self._complete_events(chunk)
        if not self.strip:  # pass bytes on at once; events are only read (whole) on the side
            if complete:
                self._scan(complete)
            return chunk
        return self._events(complete) if complete else b""

    def _complete_events(self, chunk: bytes) -> bytes:
        """The whole events now available; a partial one waits in ``_pending``."""
        data = self._pending + chunk
        cut = max(data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"))
        if cut < 0:
            if len(data) > _MAX_EVENT:  # no event boundary in sight: stop holding bytes back
                self._pending = b""
                return data
            self._pending = data
            return b""
        end = cut + (2 if data[cut : cut + 2] == b"\n\n" else 4)
        self._pending = data[end:]
        return data[:end]

    def end(self) -> bytes:
        """The response ended: the bytes still held back; parse the JSON copy."""
        rest, self._pending = self._pending, b""
        if self._sse:
            if rest:
                self._scan(rest)
            return rest if self.strip else b""
        if self.status < 400 and self._copy:
            if self._size <= self._max_json:
                self._parse_json(b"".join(self._copy))
            elif self._encoding in (b"identity", b""):
                self._parse_tail(self._copy[0])
        self._copy = []
        return rest

    # -- internals ------------------------------------------------------------------------

    def _parse_json(self, body: bytes) -> None:
        try:
            if self._encoding in (b"gzip", b"x-gzip"):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif self._encoding == b"deflate":
                body = zlib.decompress(body)
            elif self._encoding not in (b"identity", b""):
                return  # br, zstd: settle on the estimate
            doc = json.loads(body.decode("utf-8"))  # str: no encoding detection per answer
        except (ValueError, zlib.error, RecursionError):  # UnicodeDecodeError is a ValueError
            return
        if isinstance(doc, dict):
            self.usage = usage_from_response(doc.get("usage")) or self.usage

    def _parse_tail(self, tail: bytes) -> None:
        """The top-level ``usage`` of a JSON body from its last bytes (the body is too big to
        parse whole; a key can only be a ``"usage"`` followed by ``:`` outside any string)."""
        at = tail.rfind(b'"usage"')
        while at >= 0:
            rest = tail[at + 7 :].lstrip()
            if rest[:1] == b":":
                try:
                    value, _ = _DECODER.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
                except (ValueError, RecursionError):
                    return
                self.usage = usage_from_response(value) or self.usage
                return
            at = tail.rfind(b'"usage"', 0, at)

    def _scan(self, data: bytes) -> None:
        if b'"usage"' in data:
            for event in _split_events(data):
                self._usage_of(event)

    def _usage_of(self, event: bytes) -> dict[str, Any] | None:
        if b'"usage"' not in event:
            return None
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            try:
                doc = json.loads(line[5:])
            except (ValueError, RecursionError):
                continue
            if not isinstance(doc, dict):
                continue
            inner = doc.get("response") if isinstance(doc.get("response"), dict) else None
            found = usage_from_response(doc.get("usage")) or (
                usage_from_response(inner.get("usage")) if inner is not None else None
            )
            if found is not None:
                self.usage = found
                return doc
        return None

    def _events(self, data: bytes) -> bytes:
        """Complete events: drop the usage-only chunk keyguard asked for, pass the rest."""
        if b'"usage"' not in data:
            return data
        kept = []
        for event in _split_events(data, keep_separators=True):
            doc = self._usage_of(event)
            if doc is not None and doc.get("choices") == []:
                continue
            kept.append(event)
        return b"".join(kept)


def _split_events(data: bytes, *, keep_separators: bool = False) -> list[bytes]:
    normalised = data.replace(b"\r\n", b"\n") if not keep_separators else data
    out: list[bytes] = []
    start = 0
    while True:
        i = normalised.find(b"\n\n", start)
        j = normalised.find(b"\r\n\r\n", start) if keep_separators else -1
        if i < 0 and j < 0:
            if start < len(normalised):
                out.append(normalised[start:])
            return out
        if j >= 0 and (i < 0 or j < i):
            out.append(normalised[start : j + 4])
            start = j + 4
        else:
            out.append(normalised[start : i + 2])
            start = i + 2
