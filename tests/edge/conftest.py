"""Fixtures for the native data plane (``native/edge``, docs/edge.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fakes.edgebin import edge_binary


@pytest.fixture
def edge_bin() -> Callable[[str], Path]:
    """``edge_bin("probe_policy")`` -> the built binary's path (see fakes.edgebin)."""
    return edge_binary
