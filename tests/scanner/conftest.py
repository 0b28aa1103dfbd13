from __future__ import annotations

import random
from pathlib import Path

import pytest

from keyguard.scanner.detectors import load_detectors
from keyguard.scanner.runner import Scanner
from scanner.gitutil import git


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"keyguard-scanner:{request.node.name}")


@pytest.fixture(scope="session")
def detectors():
    return load_detectors(plugins=False)


@pytest.fixture
def scanner(detectors) -> Scanner:
    return Scanner(detectors, jobs=1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path
