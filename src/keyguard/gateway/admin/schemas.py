"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of the admin API's bodies.

One dictionary, :data:`SCHEMAS`, feeds both the OpenAPI document (``components.schemas``) and
the request validation (:mod:`keyguard.gateway.admin.validate`), so what is documented is what
is enforced. Response shapes are those of :mod:`keyguard.vault.views` (the CLI's ``--json``).
"""

from __future__ import annotations

from typing import Any

from keyguard.domain.records import BudgetPeriod

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
NSTR: Schema = {"type": ["string", "null"]}
NINT: Schema = {"type": ["integer", "null"]}
NNUM: Schema = {"type": ["number", "null"]}
NTIME: Schema = {"type": ["string", "null"], "format": "date-time"}
STRS: Schema = {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 100}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: tuple[str, ...] | None = None, **extra: Any) -> Schema:
    """An object schema; every property is required unless ``required`` names them."""
    return {
        "type": "object",
        "properties": props,
        "required": list(props if required is None else required),
        **extra,
    }


def listing(item: str) -> Schema:
    return obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref(item)}})


_KEY_FIELDS: dict[str, Schema] = {
    "key_id": STR,
    "name": STR,
    "owner": STR,
    "upstream": STR,
    "status": {"enum": ["active", "expired", "revoked"]},
    "allowed_models": STRS,
    "allowed_endpoints": STRS,
    "allowed_cidrs": STRS,
    "expires_at": NTIME,
    "rpm": NINT,
    "tpm": NINT,
    "max_concurrency": NINT,
    "budget_usd": NNUM,
    "budget_period": {"enum": [p.value for p in BudgetPeriod]},
    "created_at": {"type": "string", "format": "date-time"},
    "rotated_at": NTIME,
    "age_days": {"type": "number"},
    "max_age": NSTR,
    "rotation_due_at": NTIME,
    "last_used_at": NTIME,
    "revoked_at": NTIME,
}

_POSITIVE = {"type": "integer", "minimum": 1}
#: a key's or upstream credential's name (keyguard.domain.records.check_name)
NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"message": STR, "type": STR, "code": NSTR, "param": NSTR})}),
    "VirtualKey": obj(_KEY_FIELDS),
    "VirtualKeyList": listing("VirtualKey"),
    "KeyCreate": obj(
        {
            "name": NAME,
            "upstream": {**NAME, "default": "default"},
            "owner": {"type": "string", "maxLength": 200},
            "allowed_models": STRS,
            "allowed_endpoints": STRS,
            "allowed_cidrs": STRS,
            "expires_at": {"type": "string", "format": "date-time"},
            "expires_in_s": _POSITIVE,
            "rpm": _POSITIVE,
            "tpm": _POSITIVE,
            "max_concurrency": _POSITIVE,
            "budget_usd": {"type": "number", "minimum": 0},
            "budget_period": {"enum": [p.value for p in BudgetPeriod], "default": "monthly"},
            "max_age_s": _POSITIVE,
        },
        ("name",),
        additionalProperties=False,
        allOf=[
            {
                "not": {"required": ["expires_at", "expires_in_s"]},
                "x-error": "give expires_at or expires_in_s, not both",
            }
        ],
    ),
    "CreatedKey": {
        "allOf": [
            ref("VirtualKey"),
            obj({"key": {"type": "string", "description": "the virtual key; shown only once"}}),
        ]
    },
    "KeyRevoke": obj(
        {"reason": {"type": "string", "maxLength": 500}}, (), additionalProperties=False
    ),
    "KeyRotate": obj(
        {"grace_s": {"type": "integer", "minimum": 0, "maximum": 90 * 86400, "default": 86400}},
        (),
        additionalProperties=False,
    ),
    "RotatedKey": obj(
        {
            "key_id": STR,
            "name": STR,
            "old_key_valid_until": {"type": "string", "format": "date-time"},
            "key": {"type": "string", "description": "the new virtual key; shown only once"},
        }
    ),
    "KeyUsage": obj(
        {
            "key_id": STR,
            "name": STR,
            "backend": {"enum": ["redis", "in-process"]},
            "budget_period": STR,
            "period": STR,
            "period_start": NTIME,
            "period_end": NTIME,
            "spent_usd": {"type": "number"},
            "held_usd": {"type": "number"},
            "budget_usd": NNUM,
            "remaining_usd": NNUM,
            "requests_last_minute": NINT,
            "rpm": NINT,
            "tokens_last_minute": NINT,
            "tpm": NINT,
            "in_flight": NINT,
            "max_concurrency": NINT,
        }
    ),
    "UpstreamVersion": obj(
        {
            "version": INT,
            "label": {"enum": ["CURRENT", "PENDING", "PREVIOUS", None]},
            "fingerprint": STR,
            "created_at": {"type": "string", "format": "date-time"},
            "compromised": {
                "type": "boolean",
                "description": "marked compromised (found leaked, or by an operator)",
            },
            "compromised_at": NTIME,
            "compromised_reason": NSTR,
            "compromised_source": NSTR,
        }
    ),
    "Upstream": obj(
        {
            "name": STR,
            "provider": STR,
            "base_url": STR,
            "organization": NSTR,
            "project": NSTR,
            "allow_insecure_loopback": BOOL,
            "created_at": {"type": "string", "format": "date-time"},
            "last_rotated_at": NTIME,
            "max_age": NSTR,
            "rotation_due_at": NTIME,
            "versions": {"type": "array", "items": ref("UpstreamVersion")},
            "compromised_in_use": {
                "type": "array",
                "items": INT,
                "description": "CURRENT or PENDING versions marked compromised: replace them now",
            },
        }
    ),
    "UpstreamList": listing("Upstream"),
    "UpstreamRotate": obj(
        {
            "mode": {
                "enum": ["manual", "admin"],
                "description": "manual: bring the new key in new_key; admin: keyguard creates"
                " it through the OpenAI Admin API with the upstream's admin key",
            },
            "new_key": {
                "type": "string",
                "minLength": 20,
                "maxLength": 400,
                "pattern": "^[!-~]+$",  # printable ASCII: a key with a line break can't be sent
                "writeOnly": True,
            },
            "test": {"type": "boolean", "default": True},
            "validate": {"type": "boolean", "default": True},
        },
        ("mode",),
        additionalProperties=False,
        allOf=[
            {
                "if": {"properties": {"mode": {"const": "manual"}}},
                "then": {
                    "required": ["new_key"],
                    "x-error": "mode 'manual' needs the new key in new_key",
                },
            },
            {
                "if": {"properties": {"mode": {"const": "admin"}}},
                "then": {
                    "not": {"required": ["new_key"]},
                    "x-error": "mode 'admin' creates the new key itself: do not send new_key",
                },
            },
        ],
    ),
    "UpstreamRotation": obj(
        {
            "upstream": STR,
            "mode": {"enum": ["manual", "admin"]},
            "state": NSTR,
            "rotation_id": NSTR,
            "new_version": NINT,
            "old_version": NINT,
            "fingerprint": NSTR,
            "tested": BOOL,
            "reminder": NSTR,
        },
        ("upstream", "mode"),
    ),
    "AuditRecord": obj(
        {
            "seq": INT,
            "time": {"type": "string", "format": "date-time"},
            "action": STR,
            "actor": STR,
            "subject": STR,
            "source": STR,
            "outcome": STR,
            "details": {"type": "object"},
            "hash": STR,
        }
    ),
    "AuditPage": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("AuditRecord")},
            "has_more": BOOL,
            "next_after": NINT,
        }
    ),
    "AuditVerification": obj(
        {
            "ok": BOOL,
            "records": INT,
            "problems": {
                "type": "array",
                "items": obj({"seq": NINT, "kind": STR, "detail": STR}),
            },
        }
    ),
}
