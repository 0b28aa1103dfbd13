"""Find the ``model`` a request asks for, reading no more of the body than needed.

JSON bodies are read whole (they are small, and bounded by the body limit) and parsed; a body
that names ``model`` twice is refused, since parsers disagree on which one wins. Multipart
bodies (file uploads, audio) are scanned incrementally with :class:`MultipartScanner`: the
gateway buffers only the prefix up to the ``model`` field, then streams the rest through the
same scanner, which notices a second ``model`` field so the request can be aborted before the
upstream has received it whole.
"""

from __future__ import annotations

import json
import re
from typing import Any


class AmbiguousModel(ValueError):
    """The body names a model more than once, or in a way that cannot be read safely."""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen = [k for k, _ in pairs if k == "model"]
    if len(seen) > 1:
        raise AmbiguousModel("the request body names 'model' more than once")
    return dict(pairs)


def model_from_json(body: bytes) -> tuple[bool, str | None]:
    """``(parsed, model)``: whether the body is JSON, and its top-level ``model`` if any."""
    parsed, model, _ = parse_json_model(body)
    return parsed, model


def parse_json_model(body: bytes) -> tuple[bool, str | None, dict[str, Any] | None]:
    """:func:`model_from_json` plus the parsed object when it is a JSON object (so later steps
    need not parse the body again).

    Only UTF-8 (without a BOM) counts as JSON, as RFC 8259 requires on the wire: ``json.loads``
    would also guess UTF-16/32 from raw bytes, where the duplicate-``model`` pre-check below
    cannot see the key — an upstream parsing such a body differently could then act on another
    model than the one checked."""
    try:
        text = body.decode("utf-8")
        if text.count('"model"') > 1 or "\\u" in text:
            # only now pay for the duplicate-key check (escapes could spell "model" too)
            data = json.loads(text, object_pairs_hook=_pairs_hook)
        else:
            data = json.loads(text)
    except AmbiguousModel:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False, None, None
    if isinstance(data, dict):
        model = data.get("model")
        if model is None:
            return True, None, data
        if not isinstance(model, str):
            raise AmbiguousModel("'model' must be a string")
        return True, model, data
    return True, None, None


_BOUNDARY_RE = re.compile(rb'boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))', re.IGNORECASE)
_NAME_RE = re.compile(rb'[\s;]name="([^"]*)"', re.IGNORECASE)
_FILENAME_RE = re.compile(rb"[\s;]filename\*?=", re.IGNORECASE)


def multipart_boundary(content_type: bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or ``None``."""
    if not content_type.lower().startswith(b"multipart/form-data"):
        return None
    m = _BOUNDARY_RE.search(content_type)
    if m is None:
        return None
    return m.group(1) or m.group(2)


class MultipartScanner:
    """Incremental multipart/form-data scanner that collects the values of ``model`` fields.

    ``models`` lists every ``model`` value seen; ``file_started`` turns true once a part with a
    filename begins. Memory is bounded: part headers and the model value are capped, file
    contents are never kept.
    """

    MAX_PART_HEADERS = 8192
    MAX_VALUE = 1024

    def __init__(self, boundary: bytes) -> None:
        self._delim = b"\r\n--" + boundary
        self._buf = b"\r\n"  # so that the first delimiter also follows a CRLF
        self._state = "seek"  # seek -> headers -> value|seek ...
        self._capturing = False
        self.models: list[str] = []
        self.file_started = False
        self.finished = False

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self._buf += data
        while True:
            if self._state == "seek":
                i = self._buf.find(self._delim)
                if i < 0:
                    if self._capturing and len(self._buf) > self.MAX_VALUE + len(self._delim):
                        raise AmbiguousModel("the 'model' field is too long")
                    if not self._capturing:
                        self._buf = self._buf[-(len(self._delim) + 2) :]
                    return
                if self._capturing:
                    value = self._buf[:i]
                    try:
                        self.models.append(value.decode("utf-8"))
                    except UnicodeDecodeError:
                        raise AmbiguousModel("the 'model' field is not UTF-8") from None
                    self._capturing = False
                self._buf = self._buf[i + len(self._delim) :]
                self._state = "headers"
            if self._state == "headers":
                if self._buf.startswith(b"--"):
                    self.finished = True
                    return
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > self.MAX_PART_HEADERS:
                        raise AmbiguousModel("multipart part headers too large")
                    return
                head = self._buf[:end]
                self._buf = self._buf[end + 4 :]
                self._state = "seek"
                name = _NAME_RE.search(b" " + head)
                if _FILENAME_RE.search(b" " + head):
                    self.file_started = True
                elif name is not None and name.group(1) == b"model":
                    self._capturing = True
