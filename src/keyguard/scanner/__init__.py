"""Find hardcoded OpenAI and keyguard keys, and move them out of the code.

Layers inside the scanner: :mod:`detectors` (patterns + validators) and :mod:`filters` are pure;
:mod:`engine` scans one blob; :mod:`runner` reads files (in parallel); :mod:`walk` and
:mod:`gitsrc` decide what to read; :mod:`baseline`, :mod:`reporters`, :mod:`sarif`,
:mod:`verify` and :mod:`managed` act on findings; :mod:`keyguard.scanner.fix` rewrites files.
Nothing here reads ``os.environ`` or imports the vault or the gateway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module; imported on first use so that importing one scanner module (as every
#: worker process and the pre-commit hook do) does not import all of them
_EXPORTS = {
    "Detector": "keyguard.scanner.detectors",
    "OpenAIKeyDetector": "keyguard.scanner.detectors",
    "VirtualKeyDetector": "keyguard.scanner.detectors",
    "load_detectors": "keyguard.scanner.detectors",
    "scan_bytes": "keyguard.scanner.engine",
    "scan_text": "keyguard.scanner.engine",
    "ManagedKey": "keyguard.scanner.managed",
    "ManagedKeys": "keyguard.scanner.managed",
    "Finding": "keyguard.scanner.model",
    "RawMatch": "keyguard.scanner.model",
    "ScanReport": "keyguard.scanner.model",
    "Skipped": "keyguard.scanner.model",
    "Scanner": "keyguard.scanner.runner",
}

__all__ = [
    "Detector",
    "Finding",
    "ManagedKey",
    "ManagedKeys",
    "OpenAIKeyDetector",
    "RawMatch",
    "ScanReport",
    "Scanner",
    "Skipped",
    "VirtualKeyDetector",
    "load_detectors",
    "scan_bytes",
    "scan_text",
]

if TYPE_CHECKING:
    from keyguard.scanner.detectors import (
        Detector,
        OpenAIKeyDetector,
        VirtualKeyDetector,
        load_detectors,
    )
    from keyguard.scanner.engine import scan_bytes, scan_text
    from keyguard.scanner.managed import ManagedKey, ManagedKeys
    from keyguard.scanner.model import Finding, RawMatch, ScanReport, Skipped
    from keyguard.scanner.runner import Scanner


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keyguard.scanner' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
