"""SARIF 2.1.0 output, in the subset GitHub code scanning reads.

One rule per key format; each result carries the redacted key and fingerprint in its message,
a ``partialFingerprints`` entry (GitHub uses it to follow a result across commits) and the
location relative to ``%SRCROOT%``. History findings point at the path in the commit that
added the key, and carry the commit in ``properties``.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import IO, Any
from urllib.parse import quote

from keyguard.scanner.model import Finding, ScanReport

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"

_RULE_TEXT = {
    "openai-user-legacy": "Legacy OpenAI user API key",
    "openai-project": "OpenAI project API key",
    "openai-service-account": "OpenAI service-account API key",
    "openai-admin": "OpenAI admin API key",
    "openai-user": "OpenAI user API key",
    "openai-api-key": "OpenAI API key (unrecognised length)",
    "keyguard-virtual-key": "keyguard virtual key",
    "keyguard-admin-token": "keyguard admin API token",
}

_LEVEL = {"high": "error", "medium": "error", "low": "warning"}


def _version() -> str:
    try:
        return metadata.version("keyguard")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _rule(rule_id: str) -> dict[str, Any]:
    name = _RULE_TEXT.get(rule_id, rule_id)
    return {
        "id": rule_id,
        "name": "".join(p.capitalize() for p in rule_id.split("-")),
        "shortDescription": {"text": f"Hardcoded {name}"},
        "fullDescription": {
            "text": f"A {name} is written in the repository. Anyone who can read the code or "
            "its history can use it. Move it to the environment or the keyguard vault "
            "(`keyguard fix`) and rotate it."
        },
        "help": {
            "text": "Rotate the key, then run `keyguard fix PATH` to read it from the environment.",
            "markdown": "Rotate the key, then run `keyguard fix PATH`.",
        },
        "defaultConfiguration": {"level": "error"},
        "properties": {
            "tags": ["security", "secret"],
            "precision": "very-high",
            "security-severity": "9.0",
        },
    }


def _result(f: Finding, rule_index: int) -> dict[str, Any]:
    where = f" in cell {f.cell} {f.part}" if f.cell is not None else ""
    name = _RULE_TEXT.get(f.format, f.format)
    if f.encoding.startswith("base64"):
        name += f" ({f.encoding}-encoded)"
    elif f.encoding == "concatenated":
        name += " (split over concatenated string literals)"
    text = f"{name} {f.redacted} ({f.fingerprint}){where}: {f.remedy}."
    props: dict[str, Any] = {
        "confidence": f.confidence,
        "source": f.source,
        "fingerprint": f.fingerprint,
        "encoding": f.encoding,
    }
    for key in ("commit", "author_date", "verification", "managed", "cell", "part"):
        value = getattr(f, key)
        if value is not None:
            props[key] = value
    return {
        "ruleId": f.format,
        "ruleIndex": rule_index,
        "level": _LEVEL.get(f.confidence, "error"),
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": quote(f.path), "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": max(1, f.line), "startColumn": max(1, f.column)},
                }
            }
        ],
        "partialFingerprints": {"keyguardKey/v1": f.fingerprint.removeprefix("sha256:")},
        "properties": props,
    }


def to_sarif(report: ScanReport) -> dict[str, Any]:
    """The SARIF log as a dict."""
    rule_ids = sorted({f.format for f in report.findings})
    index = {rid: i for i, rid in enumerate(rule_ids)}
    notifications = [
        {"level": "note", "message": {"text": f"skipped {s.path}: {s.reason}"}}
        for s in report.skipped
    ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "keyguard",
                        "version": _version(),
                        "rules": [_rule(rid) for rid in rule_ids],
                    }
                },
                "invocations": [
                    {"executionSuccessful": True, "toolExecutionNotifications": notifications}
                ],
                "results": [_result(f, index[f.format]) for f in report.findings],
            }
        ],
    }


def render_sarif(report: ScanReport, out: IO[str]) -> None:
    """Write the SARIF log."""
    json.dump(to_sarif(report), out, indent=2)
    out.write("\n")
