"""Request-body validation against the admin API's own schemas (:mod:`.schemas`).

A small checker for the subset of JSON Schema those schemas use (``type``, ``enum``,
``const``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``, ``maxItems``,
``items``, ``properties``/``required``/``additionalProperties: false``, ``allOf``,
``if``/``then``, ``not``), so the runtime needs no schema library and what the OpenAPI document
says is exactly what is enforced. Messages name the field, never echo its value (a misplaced
secret must not come back in an error); a ``then`` branch may carry its own message
(``x-error``).
"""

from __future__ import annotations

import re
from typing import Any

from keyguard.gateway.admin.schemas import SCHEMAS, Schema

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


class InvalidBody(ValueError):
    """The body does not match its schema; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _is(value: Any, type_name: str) -> bool:
    if type_name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[type_name])


def check(value: Any, schema: Schema, where: str = "body") -> None:
    """Raise :class:`InvalidBody` when ``value`` does not match ``schema``."""
    if "$ref" in schema:
        check(value, SCHEMAS[schema["$ref"].rsplit("/", 1)[1]], where)
        return
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in names):
            raise InvalidBody(f"{where} must be of type {' or '.join(names)}", where)
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(v) for v in schema["enum"])
        raise InvalidBody(f"{where} must be one of: {allowed}", where)
    if "const" in schema and value != schema["const"]:
        raise InvalidBody(f"{where} must be {schema['const']!r}", where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidBody(f"{where} must be at least {schema['minimum']}", where)
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidBody(f"{where} must be at most {schema['maximum']}", where)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise InvalidBody(f"{where} is too short", where)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidBody(f"{where} is too long", where)
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            raise InvalidBody(f"{where} has characters or a length not allowed here", where)
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidBody(f"{where} has too many items", where)
        for i, item in enumerate(value):
            check(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        _check_object(value, schema, where)
    for sub in schema.get("allOf", ()):
        check(value, sub, where)
    if "if" in schema and _matches(value, schema["if"], where):
        then = schema.get("then", {})
        try:
            check(value, then, where)
        except InvalidBody as exc:
            if "x-error" in then:
                raise InvalidBody(then["x-error"], exc.param) from None
            raise
    if "not" in schema and _matches(value, schema["not"], where):
        raise InvalidBody(schema.get("x-error", f"{where} does not have an allowed shape"), None)


def _matches(value: Any, schema: Schema, where: str) -> bool:
    try:
        check(value, schema, where)
    except InvalidBody:
        return False
    return True


def _check_object(value: dict[str, Any], schema: Schema, where: str) -> None:
    props: dict[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            raise InvalidBody(f"missing required field {name!r}", name)
    for name, item in value.items():
        if name in props:
            check(item, props[name], name if where == "body" else f"{where}.{name}")
        elif schema.get("additionalProperties") is False:
            shown = name if name.isidentifier() and len(name) <= 40 else "(unnamed)"
            raise InvalidBody(f"unknown field {shown!r}", None)


def parse_body(value: Any, schema_name: str) -> dict[str, Any]:
    """``value`` checked against ``SCHEMAS[schema_name]`` (defaults filled in)."""
    schema = SCHEMAS[schema_name]
    check(value, schema)
    out = dict(value)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
    return out
