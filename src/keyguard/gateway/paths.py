"""Request targets: split, validate, and map onto the pinned upstream's base path.

Only origin-form targets reach this point (the wire level rejects absolute-form). A path is
refused if it contains dot segments (``.``/``..``), empty segments, a backslash, control or
non-ASCII characters, or percent-encodings that could turn into any of those after another
decoding (``%2e``, ``%2f``, ``%5c``, ``%25``, ``%00``). The upstream path is always
``base_path + path[len("/v1"):]`` on the pinned upstream host, so nothing a client sends can
reach another host or escape the base path.
"""

from __future__ import annotations

import re

_BAD_ENCODINGS = re.compile(rb"%(2e|2f|5c|25|00)", re.IGNORECASE)
_ALLOWED = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QUERY_ALLOWED = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*")


class BadPath(ValueError):
    """The request target is not acceptable."""


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """``(path, query)`` of an origin-form target; ``query`` keeps no leading ``?``."""
    path, _, query = target.partition(b"?")
    if b"#" in query or b"#" in path:
        raise BadPath("fragment in request target")
    return path, query


_checked: dict[bytes, str] = {}


def check_path(path: bytes) -> str:
    """Validate ``path`` and return it as text; raises :class:`BadPath`.

    Valid paths are remembered (up to 4096; API paths repeat) so the common case is a lookup.
    """
    hit = _checked.get(path)
    if hit is not None:
        return hit
    text = _check_path(path)
    if len(_checked) >= 4096:
        _checked.clear()
    _checked[path] = text
    return text


def _check_path(path: bytes) -> str:
    if not path.startswith(b"/") or not _ALLOWED.fullmatch(path):
        raise BadPath("invalid characters in path")
    if _BAD_ENCODINGS.search(path):
        raise BadPath("encoded dot, slash, backslash, percent or NUL in path")
    segments = path.split(b"/")[1:]
    for seg in segments[:-1]:
        if seg in (b"", b".", b".."):
            raise BadPath("empty or dot segment in path")
    if segments and segments[-1] in (b".", b".."):
        raise BadPath("dot segment in path")
    return path.decode("ascii")


def check_query(query: bytes) -> bytes:
    if query and not _QUERY_ALLOWED.fullmatch(query):
        raise BadPath("invalid characters in query")
    return query


def upstream_target(base_path: str, path: str, query: bytes) -> bytes:
    """The request target to send upstream for a client ``path`` under ``/v1/``."""
    rest = path[len("/v1") :]
    target = (base_path.rstrip("/") + rest).encode("ascii")
    return target + b"?" + query if query else target
