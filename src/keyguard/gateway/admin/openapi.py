"""The admin API's OpenAPI 3.1 document, generated from the route table and the schemas.

Served unauthenticated at ``/admin/openapi.json`` (it holds no data). Every route of
:data:`~keyguard.gateway.admin.routes.ROUTES` appears with its scope (``x-required-scope``),
parameters, request body, success response and error responses in OpenAI's error shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from keyguard.domain.admin_tokens import AdminScope
from keyguard.gateway.admin.routes import OPENAPI_PATH, PARAMS, ROUTES, Route
from keyguard.gateway.admin.schemas import SCHEMAS, ref

_ERRORS = {
    400: "Invalid request (body, query or parameter)",
    401: "Missing, malformed, unknown, revoked or expired admin token",
    403: "The token's scope does not allow this, or the client address is not allowed",
    404: "No such key or upstream",
    409: "The change conflicts with the current state (e.g. the key is revoked)",
    429: "Too many failed authentications from this address (see Retry-After)",
    502: "The upstream (OpenAI) refused or could not be reached",
    503: "A store (database, limits) is unreachable",
}

_DESCRIPTION = (
    "keyguard's admin API: virtual keys, upstream credentials and the audit log. "
    "Authenticate with `Authorization: Bearer kga_...` (create a token with "
    "`keyguard admin-token create NAME --scope read|admin`). `read` tokens may call GET "
    "routes; `admin` tokens may call every route. Responses never contain key material, "
    "except the new virtual key returned once by createKey and rotateKey."
)


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PARAMS[name][1],
            "schema": {"type": "string", "pattern": f"^{PARAMS[name][0]}$"},
        }
        for name in route.params
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "description": q.description,
         "schema": q.schema}
        for q in route.query
    ]  # fmt: skip
    responses: dict[str, Any] = {
        str(route.status): {
            "description": "OK" if route.status == 200 else "Created",
            "content": {"application/json": {"schema": ref(route.response)}},
        }
    }
    # 400: any request can carry a malformed path, query or body
    for status in sorted({400, 401, 403, 429, *route.errors}):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.path.split("/")[3]],
        "security": [{"adminToken": []}],
        "x-required-scope": route.scope.value,
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if route.request is not None:
        op["requestBody"] = {
            "required": route.request in ("KeyCreate", "UpstreamRotate"),
            "content": {"application/json": {"schema": ref(route.request)}},
        }
    return op


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "keyguard admin API", "version": "1", "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"adminToken": []}],
        "tags": [
            {"name": "keys", "description": "Virtual keys"},
            {"name": "upstreams", "description": "Upstream (OpenAI) credentials"},
            {"name": "audit", "description": "The hash-chained audit log"},
            {"name": "meta", "description": "About this API"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin token (kga_...); scopes: "
                    + ", ".join(s.value for s in AdminScope),
                }
            },
            "schemas": SCHEMAS,
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": ref("Error")}},
                }
                for status, text in _ERRORS.items()
            },
        },
    }


@lru_cache(maxsize=1)
def document_bytes() -> bytes:
    return json.dumps(document(), separators=(",", ":"), sort_keys=True).encode()
