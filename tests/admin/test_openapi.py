"""The OpenAPI document: valid OpenAPI 3.1, complete (every routed path and method is there),
every reference resolves, and real responses match the schemas it documents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from admin.conftest import Client
from keyguard.gateway.admin.openapi import document
from keyguard.gateway.admin.routes import OPENAPI_PATH, ROUTES

META_SCHEMA = Path(__file__).parent / "data" / "openapi-3.1-schema.json"


@pytest.fixture(scope="module")
def served(client: Client) -> dict[str, Any]:
    r = client.get(OPENAPI_PATH)  # no token needed: the document holds no data
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc: dict[str, Any] = r.json()
    return doc


def test_served_document_is_the_generated_one(served: dict[str, Any]) -> None:
    assert served == json.loads(json.dumps(document()))


def test_valid_against_the_openapi_31_meta_schema(served: dict[str, Any]) -> None:
    meta = json.loads(META_SCHEMA.read_text())
    jsonschema.Draft202012Validator(meta).validate(served)
    try:
        from openapi_spec_validator import validate
    except ImportError:  # optional: the meta-schema check above always runs
        return
    validate(served)


def test_every_route_is_documented_and_nothing_else(served: dict[str, Any]) -> None:
    routed = {(r.path, r.method.lower()) for r in ROUTES} | {(OPENAPI_PATH, "get")}
    documented = {(p, m) for p, ops in served["paths"].items() for m in ops}
    assert routed == documented
    for route in ROUTES:
        op = served["paths"][route.path][route.method.lower()]
        assert op["x-required-scope"] == route.scope.value
        assert op["security"] == [{"adminToken": []}]
        assert {"401", "403", "429", str(route.status)} <= set(op["responses"])
        assert [p["name"] for p in op.get("parameters", []) if p["in"] == "path"] == route.params
    ids = [op["operationId"] for ops in served["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_every_reference_resolves(served: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(served)))
    assert refs
    for ref in refs:
        node: Any = served
        for part in ref.split("/"):
            node = node[part]


def _undocumented(schema: Any, value: Any, comps: dict[str, Any], at: str = "$") -> list[str]:
    """Paths of fields in ``value`` that ``schema`` does not list (``$ref`` and ``allOf``
    followed): the API must not return anything its document does not describe."""
    while "$ref" in schema:
        schema = comps[schema["$ref"].rsplit("/", 1)[1]]
    props: dict[str, Any] = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        while "$ref" in part:
            part = comps[part["$ref"].rsplit("/", 1)[1]]
        props.update(part.get("properties", {}))
    found: list[str] = []
    if isinstance(value, dict) and props:
        for k, v in value.items():
            if k not in props:
                found.append(f"{at}.{k}")
            else:
                found += _undocumented(props[k], v, comps, f"{at}.{k}")
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            found += _undocumented(schema["items"], v, comps, f"{at}[{i}]")
    return found


def _check(served: dict[str, Any], name: str, value: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": served["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)
    comps = served["components"]["schemas"]
    assert _undocumented(comps[name], value, comps) == [], name


def test_responses_match_their_schemas(
    served: dict[str, Any], client: Client, admin: str, reader: str
) -> None:
    created = client.post("/admin/v1/keys", admin, json={"name": "schema-check", "tpm": 10})
    _check(served, "CreatedKey", created.json())
    key_id = created.json()["key_id"]
    for path, name in [
        ("/admin/v1/keys?all=true", "VirtualKeyList"),
        (f"/admin/v1/keys/{key_id}", "VirtualKey"),
        (f"/admin/v1/keys/{key_id}/usage", "KeyUsage"),
        ("/admin/v1/upstreams", "UpstreamList"),
        ("/admin/v1/audit?limit=50", "AuditPage"),
        ("/admin/v1/audit/verify", "AuditVerification"),
    ]:
        r = client.get(path, reader)
        assert r.status_code == 200, (path, r.text)
        _check(served, name, r.json())
    rotated = client.post(f"/admin/v1/keys/{key_id}/rotate", admin, json={"grace_s": 60})
    _check(served, "RotatedKey", rotated.json())
    _check(served, "VirtualKey", client.post(f"/admin/v1/keys/{key_id}/revoke", admin).json())
    _check(served, "Error", client.get("/admin/v1/keys").json())


def test_what_the_document_forbids_is_refused_and_errors_match_it(
    served: dict[str, Any], client: Client, admin: str, reader: str
) -> None:
    """Found by fuzzing the API with schemathesis against this document: error bodies name the
    field in ``param`` (documented as null only), ``all`` took any value, and rules the handlers
    enforced (exclusive expiry fields, new_key per mode) were missing from the schemas."""
    from keyguard.domain.keys import generate_openai_style_key

    def refused(r: Any, message: str | None = None) -> None:
        assert r.status_code == 400, r.text
        _check(served, "Error", r.json())
        if message is not None:
            assert r.json()["error"]["message"] == message

    refused(client.post("/admin/v1/keys", admin, json={}))  # param: "name"
    assert client.post("/admin/v1/keys", admin, json={}).json()["error"]["param"] == "name"
    refused(client.get("/admin/v1/keys?all=maybe", reader))
    assert client.get("/admin/v1/keys?all=1", reader).status_code == 200
    for bad_name in ("", "-x", "a b", "ü", "x" * 65):
        refused(client.post("/admin/v1/keys", admin, json={"name": bad_name}))
        refused(client.post("/admin/v1/keys", admin, json={"name": "ok", "upstream": bad_name}))
    both = {"name": "x", "expires_at": "2099-01-01T00:00:00Z", "expires_in_s": 60}
    refused(
        client.post("/admin/v1/keys", admin, json=both), "give expires_at or expires_in_s, not both"
    )
    rotate = "/admin/v1/upstreams/default/rotate"
    key = generate_openai_style_key()
    refused(
        client.post(rotate, admin, json={"mode": "manual"}),
        "mode 'manual' needs the new key in new_key",
    )
    refused(
        client.post(rotate, admin, json={"mode": "admin", "new_key": key}),
        "mode 'admin' creates the new key itself: do not send new_key",
    )
    r = client.post(rotate, admin, json={"mode": "manual", "new_key": key + "\n"})
    refused(r)
    assert key not in r.text and key[-8:] not in r.text
    for route in ROUTES:  # any request can be malformed: 400 is documented everywhere
        assert "400" in served["paths"][route.path][route.method.lower()]["responses"]
