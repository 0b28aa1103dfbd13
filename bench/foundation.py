"""Foundation benchmarks: virtual-key verifications/s, uncached upstream decrypts/s, CLI startup.

Run: .venv/bin/python bench/foundation.py   (pinned to one core; prints its figures)
Targets: >= 50,000 verifications/s on one core; `keyguard --help` in < 0.3 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault


def rate(fn, seconds: float = 2.0) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (best of three runs)."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(200):
                fn()
            n += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.create(SqliteStore(Path(tmp) / "bench.db"), MasterKey.generate())
        vault.add_upstream("prod", Secret(generate_openai_style_key()))
        tokens = []
        for i in range(1000):
            _, token = vault.create_key(KeySpec(name=f"k{i}", upstream="prod"))
            tokens.append(token.reveal())
        auth = vault.authenticator()
        now = datetime.now(timezone.utc)
        token = tokens[500]
        auth.authenticate(token, now)
        verifications = rate(lambda: auth.authenticate(token, now))

        def uncached() -> None:
            vault.clear_caches()
            vault.upstream_secret("prod", audit=False)

        decrypts = rate(uncached)
        cached = rate(lambda: vault.upstream_secret("prod", audit=False))
        vault.close()

    exe = Path(sys.executable).with_name("keyguard")
    cmd = (
        [str(exe), "--help"]
        if exe.exists()
        else [sys.executable, "-m", "keyguard.cli.main", "--help"]
    )
    times = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)

    print(
        f"virtual-key verifications/s (1 core, 1000 keys): {verifications:,.0f}  (target >= 50,000)"
    )
    print(f"upstream key decrypts/s, uncached (read + unseal): {decrypts:,.0f}")
    print(f"upstream key lookups/s, cached: {cached:,.0f}")
    print(
        f"`keyguard --help` startup: median {statistics.median(times) * 1000:.0f} ms,"
        f" min {min(times) * 1000:.0f} ms  (target < 300 ms)"
    )


if __name__ == "__main__":
    main()
