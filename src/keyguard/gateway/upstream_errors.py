"""Upstream error bodies, cleaned before a client sees them.

OpenAI's error messages can quote the key it was sent — masked, but not entirely:
``Incorrect API key provided: sk-PMafP*****…*****E873`` shows nine characters of the real key.
The gateway's client holds a virtual key and must learn nothing of the real one, so every
upstream response with status >= 400 is read whole (bounded) and passed through
:func:`scrub_error_body`: known secrets, key-shaped strings, their redacted forms and masked
forms are replaced by ``[redacted key]``; the rest of the message (what was wrong with the
request) is kept. A compressed body is decompressed for that (and sent uncompressed); one that
cannot be read (another coding, too large, corrupt) is replaced by a generic error.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from keyguard.domain.redaction import redact
from keyguard.gateway.errors import error_body

#: the largest upstream error body read for cleaning (OpenAI's are well under 1 KiB)
MAX_ERROR_BODY = 64 * 1024

#: a masked key (OpenAI quotes ``sk-PMafP*****…*****E873``): an optional visible prefix, a run
#: of stars (possibly around an ellipsis, raw or JSON-escaped) and the visible last characters
_MASKED = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9_\-]{0,40})?\*{4,}(?:(?:…|\\u2026)\**)?[A-Za-z0-9_\-]{0,16}"
)
#: what :func:`~keyguard.domain.redaction.redact` leaves of a key: ``sk-proj-…wxyz`` (the
#: ellipsis raw or JSON-escaped); the prefix is bounded, so a long run of word characters
#: costs linear time, not quadratic
_REDACTED = re.compile(r"[A-Za-z0-9_\-]{0,40}(?:…|\\u2026)[A-Za-z0-9_\-]{0,4}")
_DROP = frozenset({b"content-encoding", b"content-length"})


def scrub_text(text: str) -> str:
    """``text`` with nothing left of any key: not even a prefix or the last four characters."""
    text = redact(text)
    text = _MASKED.sub("[redacted key]", text)  # first: a mask may hold an ellipsis
    return _REDACTED.sub("[redacted key]", text)


def _decoded(encoding: bytes, body: bytes) -> bytes | None:
    try:
        if encoding in (b"", b"identity"):
            raw = body
        elif encoding in (b"gzip", b"x-gzip"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = d.decompress(body, MAX_ERROR_BODY + 1)
        elif encoding == b"deflate":
            d = zlib.decompressobj()
            raw = d.decompress(body, MAX_ERROR_BODY + 1)
        else:
            return None  # br, zstd, ...: cannot be checked
    except zlib.error:
        return None
    return raw if len(raw) <= MAX_ERROR_BODY else None


def scrub_error_body(
    status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes | None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers (without ``Content-Encoding``/``Content-Length``) and the cleaned body of an
    upstream error response; ``body`` is ``None`` when it was over :data:`MAX_ERROR_BODY`."""
    encoding = b""
    for k, v in headers:
        if k == b"content-encoding":
            encoding = v.strip().lower()
    raw = _decoded(encoding, body) if body is not None else None
    kept = [(k, v) for k, v in headers if k not in _DROP]
    if raw is None:
        generic = error_body(status, f"the upstream answered {status}", "upstream_error")
        kept = [(k, v) for k, v in kept if k != b"content-type"]
        return [(b"content-type", b"application/json"), *kept], generic
    return kept, scrub_text(raw.decode("utf-8", "replace")).encode("utf-8")
