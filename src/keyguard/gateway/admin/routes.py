"""The admin API's one route table: dispatch, scopes and the OpenAPI document all come from it.

Each :class:`Route` names its method, path template, required scope, handler, and the schemas
of its request and response bodies (:mod:`.schemas`). :func:`match` finds the route of a
request; :mod:`.openapi` documents exactly these routes, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from keyguard.domain.admin_tokens import AdminScope
from keyguard.gateway.admin import handlers as h

Handler = Callable[[h.Call], "h.Payload | Awaitable[h.Payload]"]

#: path parameter -> (pattern, description)
PARAMS: dict[str, tuple[str, str]] = {
    "key_id": ("[0-9a-z]{12}", "a virtual key's public id"),
    "name": ("[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", "an upstream credential's name"),
}


@dataclass(frozen=True)
class Query:
    """A query parameter (documented; handlers parse and check it)."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    scope: AdminScope
    handler: Any  # Handler; Any keeps mypy from unifying sync and async handlers
    response: str
    status: int = 200
    request: str | None = None
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(
            r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{PARAMS[m.group(1)][0]})", self.path
        )
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def mutating(self) -> bool:
        return self.scope is AdminScope.ADMIN

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


R, A = AdminScope.READ, AdminScope.ADMIN
KEYS = "/admin/v1/keys"
_ALL = Query("all", {"type": "boolean", "default": False}, "include revoked and expired keys")
_AFTER = Query("after", {"type": "integer", "minimum": 0, "default": 0}, "records after this seq")
_LIMIT = Query(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"
)

ROUTES: tuple[Route, ...] = (
    Route("GET", KEYS, "listKeys", "List virtual keys", R, h.list_keys, "VirtualKeyList",
          query=(_ALL,)),
    Route("POST", KEYS, "createKey", "Create a virtual key (the key is returned once)", A,
          h.create_key, "CreatedKey", 201, "KeyCreate", errors=(400, 404)),
    Route("GET", KEYS + "/{key_id}", "getKey", "Show a virtual key", R, h.show_key,
          "VirtualKey", errors=(404,)),
    Route("POST", KEYS + "/{key_id}/revoke", "revokeKey", "Revoke a virtual key for good", A,
          h.revoke_key, "VirtualKey", request="KeyRevoke", errors=(400, 404)),
    Route("POST", KEYS + "/{key_id}/rotate", "rotateKey",
          "New secret for the same key id; the old one works for grace_s (returned once)", A,
          h.rotate_key, "RotatedKey", request="KeyRotate", errors=(400, 404, 409)),
    Route("GET", KEYS + "/{key_id}/usage", "getKeyUsage", "Spend and live counters of a key", R,
          h.key_usage, "KeyUsage", errors=(404, 503)),
    Route("GET", "/admin/v1/upstreams", "listUpstreams",
          "List upstream credentials (fingerprints only)", R, h.list_upstreams, "UpstreamList"),
    Route("POST", "/admin/v1/upstreams/{name}/rotate", "rotateUpstream",
          "Rotate an upstream key: by hand (new_key in the body) or through the OpenAI Admin API",
          A, h.rotate_upstream, "UpstreamRotation", request="UpstreamRotate",
          errors=(400, 404, 409, 502)),
    Route("GET", "/admin/v1/audit", "listAudit", "Audit records, oldest first, paged", R,
          h.list_audit, "AuditPage", query=(_AFTER, _LIMIT), errors=(400,)),
    Route("GET", "/admin/v1/audit/verify", "verifyAudit", "Verify the audit hash chain", R,
          h.verify_audit, "AuditVerification"),
)  # fmt: skip

OPENAPI_PATH = "/admin/openapi.json"


def match(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """``(route, path params, path_known)``; ``path_known`` without a route means 405."""
    known = False
    for route in ROUTES:
        m = route.pattern.fullmatch(path)
        if m is None:
            continue
        known = True
        if route.method == method:
            return route, m.groupdict(), True
    return None, {}, known


def allowed_methods(path: str) -> list[str]:
    return sorted({r.method for r in ROUTES if r.pattern.fullmatch(path)})
