"""Find hardcoded OpenAI and keyguard keys, and move them out of the code.

Layers inside the scanner: :mod:`detectors` (patterns + validators) and :mod:`filters` are pure;
:mod:`engine` scans one blob; :mod:`runner` reads files (in parallel); :mod:`walk` and
:mod:`gitsrc` decide what to read; :mod:`baseline`, :mod:`reporters`, :mod:`sarif`,
:mod:`verify` and :mod:`managed` act on findings; :mod:`keyguard.scanner.fix` rewrites files.
Nothing here reads ``os.environ`` or imports the vault or the gateway.
"""

from __future__ import annotations

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
