"""A base64 run dense with anchors is decoded once, not once per anchor.

Each anchor used to decode its own ~1.7 KB window at four phases: 1 MB of ``a2df`` (the
base64 of ``kg_``) repeated took ~21 s to scan, a cheap way for a scanned repository to stall
CI. Overlapping windows in one run are now merged (PYTEST_DONT_REWRITE: a failing assertion
never shows a key).
"""

from __future__ import annotations

import base64
import random

from keyguard.domain.keys import fingerprint as fp
from keyguard.scanner.detectors import load_detectors
from keyguard.scanner.encoded import decoded_windows
from keyguard.scanner.engine import scan_text
from scanner.keygen import openai_key, virtual_key


def test_a_run_dense_with_anchors_is_decoded_once_and_keys_in_it_are_found() -> None:
    rng = random.Random(5)
    detectors = load_detectors(plugins=False)
    for key in (openai_key(rng), virtual_key(rng)):
        encoded = base64.b64encode(b'{"k": "' + key.encode() + b'"}').decode()
        for filler in ("a2df", "a2dhX2", "VDNCbGJrRk"):
            text = "secret: " + filler * (200_000 // len(filler)) + "=" + encoded + "\n"
            windows = list(decoded_windows(text))
            assert len(windows) <= 8  # two runs (filler, key blob), four phases each
            found = {fp(m.value) for m in scan_text(text, detectors)}
            assert fp(key) in found


def test_windows_of_distant_anchors_in_one_long_run_stay_separate() -> None:
    rng = random.Random(6)
    keys = [openai_key(rng) for _ in range(3)]
    blobs = [base64.b64encode(b" " + k.encode() + b" ").decode() for k in keys]
    filler = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                     for _ in range(5000))  # fmt: skip
    text = "v: " + filler.join(blobs) + "\n"
    found = {fp(m.value) for m in scan_text(text, load_detectors(plugins=False))}
    assert {fp(k) for k in keys} <= found
