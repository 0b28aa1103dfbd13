"""Where the native edge's binaries are (``native/edge``, docs/edge.md).

They are built by ``.ci/run`` (``cargo build --release`` in ``native/edge``). A test that needs
one skips when it is missing, except under CI (env ``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

EDGE_DIR = Path(__file__).resolve().parents[2] / "native" / "edge"
RELEASE = EDGE_DIR / "target" / "release"


def edge_binary(name: str = "keyguard-edge") -> Path:
    """The path of a built binary of ``native/edge`` (skip, or fail under CI, when absent)."""
    path = RELEASE / name
    if not path.is_file():
        msg = f"{path} is not built (cd native/edge && cargo build --release)"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set: not skipping)")
        pytest.skip(msg)
    return path


#: ``KEYGUARD_TEST_DATA_PLANE=native`` runs the gateway suites' shared gateway through the edge
DATA_PLANE = os.environ.get("KEYGUARD_TEST_DATA_PLANE", "python")


class Probe:
    """A probe binary of ``native/edge`` (``probe_policy``, ``probe_wire``, ``probe_audit``):
    one JSON line in (``{"fn": ..., "args": [...]}``), one out (``{"ok": ...}``)."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def call(self, fn: str, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"{self.name} died (exit status {self.proc.poll()})"
        reply = json.loads(line)
        assert "ok" in reply, reply
        return reply["ok"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0
        if self.proc.stdout is not None:
            self.proc.stdout.close()
