"""Baseline files: the findings a project has accepted, stored as keyed fingerprints.

A baseline never holds a key, a redacted form or a plain hash of one: each entry is
HMAC-SHA256(salt, key) with a random 256-bit salt kept in the file, so two repositories'
baselines cannot be correlated and the entries say nothing about the keys. A finding is
*known* when its keyed fingerprint and path are both in the baseline.

Format (JSON)::

    {"version": 1, "tool": "keyguard", "salt": "<64 hex>",
     "entries": [{"hmac": "<64 hex>", "path": "src/app.py", "format": "openai-project"}]}

``UPGRADES`` maps an old version to the step that lifts it one version up; loading applies
them in order, and a file from a newer keyguard is refused rather than misread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyguard.errors import ScanError
from keyguard.scanner.model import Finding

VERSION = 1

#: version -> function turning a document of that version into one of version + 1
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass
class Baseline:
    """Known findings, by (keyed fingerprint, path)."""

    salt: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    entries: dict[tuple[str, str], str] = field(default_factory=dict)

    def keyed(self, finding: Finding) -> str:
        """HMAC-SHA256 of the key under this baseline's salt (hex)."""
        value = finding.secret.reveal().encode("utf-8", "surrogatepass")
        return hmac.new(self.salt, value, hashlib.sha256).hexdigest()

    def knows(self, finding: Finding) -> bool:
        """True when this finding (same key, same path) was accepted before."""
        return (self.keyed(finding), finding.path) in self.entries

    def add(self, findings: Iterable[Finding]) -> None:
        """Accept these findings."""
        for f in findings:
            self.entries[(self.keyed(f), f.path)] = f.format

    def to_json(self) -> dict[str, Any]:
        """The on-disk document."""
        entries = [
            {"hmac": h, "path": p, "format": fmt}
            for (h, p), fmt in sorted(self.entries.items(), key=lambda e: e[0][::-1])
        ]
        return {"version": VERSION, "tool": "keyguard", "salt": self.salt.hex(), "entries": entries}

    @classmethod
    def from_json(cls, doc: Any) -> Baseline:
        """Parse (and upgrade) a baseline document; :class:`ScanError` if it is not one."""
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
            raise ScanError("not a keyguard baseline file (no version)")
        version = doc["version"]
        if version > VERSION:
            raise ScanError(f"baseline version {version} is newer than this keyguard ({VERSION})")
        while version < VERSION:
            if version not in UPGRADES:
                raise ScanError(f"cannot upgrade baseline version {version}")
            doc = UPGRADES[version](doc)
            version = doc["version"]
        try:
            salt = bytes.fromhex(doc["salt"])
            entries = {(e["hmac"], e["path"]): e.get("format", "") for e in doc["entries"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise ScanError(f"malformed baseline file: {type(exc).__name__}") from exc
        if len(salt) < 16:
            raise ScanError("malformed baseline file: salt too short")
        return cls(salt=salt, entries=entries)


def load(path: Path) -> Baseline:
    """Read a baseline; :class:`ScanError` if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScanError(f"cannot read baseline {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ScanError(f"baseline {path} is not valid JSON (not UTF-8)") from exc
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise ScanError(f"baseline {path} is not valid JSON") from exc
    return Baseline.from_json(doc)


def save(baseline: Baseline, path: Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a baseline."""
    data = json.dumps(baseline.to_json(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=".keyguard-baseline.")
    try:
        os.chmod(tmp, 0o644)  # a baseline is meant to be committed
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
