"""Where the native edge's binaries are (``native/edge``, docs/edge.md).

They are built by ``.ci/run`` (``cargo build --release`` in ``native/edge``). A test that needs
one skips when it is missing, except under CI (env ``CI`` set), where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

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
