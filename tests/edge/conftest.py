"""Fixtures for the native data plane (``native/edge``, docs/edge.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakes.edgebin import Probe, edge_binary


@pytest.fixture
def edge_bin() -> Callable[[str], Path]:
    """``edge_bin("probe_policy")`` -> the built binary's path (see fakes.edgebin)."""
    return edge_binary


@pytest.fixture(scope="module")
def probe_of() -> Iterator[Callable[[str], Probe]]:
    """``probe_of("probe_audit")``: that probe binary, started once per test module."""
    probes: dict[str, Probe] = {}

    def get(name: str) -> Probe:
        if name not in probes:
            probes[name] = Probe(edge_binary(name))
        return probes[name]

    yield get
    for p in probes.values():
        p.close()
