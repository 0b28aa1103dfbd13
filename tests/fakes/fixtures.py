"""Fixtures shared by the test packages that run a real gateway against the fake upstream.

A conftest imports the ones it needs (``from fakes.fixtures import ca, ca_bundle, ...``);
each importing conftest gets its own session-scoped instances, as if it had defined them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from fakes.openai_upstream import FakeOpenAI
from keyguard.domain.keys import generate_openai_style_key


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A test certificate authority (trustme) that signs the fake upstream's certificate."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA as a PEM file, for ``upstream_ca_bundle``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def real_key() -> str:
    """The upstream key the fake accepts, generated at run time."""
    return generate_openai_style_key("proj")


@pytest.fixture(scope="session")
def upstream(ca: trustme.CA, real_key: str) -> Iterator[FakeOpenAI]:
    """The fake OpenAI upstream over HTTPS; fails the session if it ever saw a virtual key."""
    with FakeOpenAI(ca, [real_key]) as up:
        yield up
    up.assert_clean()
