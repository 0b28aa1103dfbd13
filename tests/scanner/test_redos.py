"""Crafted input must not make a scan slow: every prefilter and pattern stays linear in the
size of the file, whatever an attacker puts in the repository it scans."""

from __future__ import annotations

import time

from keyguard.scanner.runner import Scanner
from scanner.keygen import MARKER, openai_key


def _seconds(scanner: Scanner, data: bytes) -> float:
    start = time.perf_counter()
    scanner.scan_blob(data, "x.py")
    return time.perf_counter() - start


def test_a_long_run_of_key_prefixes_scans_in_linear_time(scanner, rng):
    """``sk-sk-sk-…`` not closed by a quote, and a key split over joined literals after it:
    the join prefilter and the first literal's pattern read the whole run from every ``sk-``
    in it (100 KB took 25 s, growing with the square of the size)."""
    key = openai_key(rng)
    run = "sk-" * 33_000
    data = f'a = {run}\nb = "{key[:40]}" + "{key[40:]}"\n{MARKER}\n'.encode()
    assert _seconds(scanner, data) < 2.0
    found = scanner.scan_blob(data, "x.py")
    assert [f.fingerprint for f in found] == [scanner.scan_blob(key.encode(), "k")[0].fingerprint]
