"""Fixtures of the vault tests: a real SQLite store, a controllable clock, sentinel keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "vault.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def vault(store: SqliteStore, master: MasterKey, clock: Clock) -> Vault:
    return Vault.create(store, master, clock=clock, actor="tester", source="test")


@pytest.fixture
def openai_key() -> Secret:
    """A key-shaped sentinel generated at run time (never a committed literal)."""
    return Secret(generate_openai_style_key(), name="sentinel")
