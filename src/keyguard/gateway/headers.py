"""Header rewriting for the key swap (the three steps of mitmproxy's upstream auth).

1. From the client's request drop its credentials (``Authorization``, ``api-key``), the
   account selectors (``OpenAI-Organization``, ``OpenAI-Project``), hop-by-hop headers (and any
   header the client's ``Connection`` names), framing headers (re-set by us), ``Expect`` (the
   gateway answers 100-continue itself) and forwarding headers (the client's addresses are not
   the upstream's business).
2. Add the upstream's ``Host`` and ``Authorization: Bearer`` plus its organization/project;
   cut ``Accept-Encoding`` to the codings keyguard can read (:func:`readable_encodings`).
3. From the upstream's response drop hop-by-hop and framing headers and the identifiers of the
   upstream account (``OpenAI-Organization``, ``OpenAI-Project``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_CLIENT_DROP = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"api-key",
    b"openai-organization",
    b"openai-project",
    b"content-length",
    b"expect",
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"keyguard-edge-peer",  # the edge's own headers to the core (docs/edge.md)
    b"keyguard-edge-admitted",
}

#: the upstream account's identifiers (OpenAI names the organization and project of the real
#: key in every response) are not the virtual-key holder's business either
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"openai-organization", b"openai-project"}


_NONE: frozenset[bytes] = frozenset()


def _connection_named(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return frozenset(named) if named else _NONE


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or ``None``."""
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            try:
                return token.strip().decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def upstream_auth_lines(secret: str, organization: str | None, project: str | None) -> bytes:
    """The header lines that carry the upstream credential (built once per key version)."""
    lines = b"authorization: Bearer " + secret.encode("ascii") + b"\r\n"
    if organization:
        lines += b"openai-organization: " + organization.encode("ascii") + b"\r\n"
    if project:
        lines += b"openai-project: " + project.encode("ascii") + b"\r\n"
    return lines


_READABLE = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})
_encodings_memo: dict[bytes, bytes] = {}


def readable_encodings(value: bytes) -> bytes:
    """The client's ``Accept-Encoding`` cut to the codings keyguard can read itself (gzip,
    deflate, identity; ``*`` becomes gzip and deflate; ``identity`` when nothing is left): the
    gateway reads usage and cleans error bodies from responses, so the upstream must never
    answer in br or zstd. Memoised: clients send the same few values."""
    out = _encodings_memo.get(value)
    if out is None:
        kept: list[bytes] = []
        for part in value.split(b","):
            coding = part.split(b";", 1)[0].strip().lower()
            if coding in _READABLE:
                kept.append(part.strip())
            elif coding == b"*":
                kept += (b"gzip", b"deflate")
        out = b", ".join(dict.fromkeys(kept)) if kept else b"identity"
        if len(_encodings_memo) < 256:
            _encodings_memo[value] = out
    return out


def request_head(
    method: str,
    target: bytes,
    host: bytes,
    client_headers: Sequence[tuple[bytes, bytes]],
    auth_lines: bytes,
    framing: bytes,
) -> bytes:
    """The complete upstream request head with the client's credentials swapped out."""
    named = _connection_named(client_headers)
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for k, v in client_headers:
        if k in _CLIENT_DROP or k in named:
            continue
        if k == b"accept-encoding":
            v = readable_encodings(v)
        parts += (k, b": ", v, b"\r\n")
    parts += (auth_lines, framing, b"\r\n")
    return b"".join(parts)


def response_headers(upstream: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop and framing headers."""
    headers = list(upstream)
    named = _connection_named(headers)
    return [(k, v) for k, v in headers if k not in _RESPONSE_DROP and k not in named]
