"""The managed-key port (with a hand-written double of the vault), detector plugins through
entry points, and the scanner's public surface."""

from __future__ import annotations

from importlib import metadata

import pytest

import keyguard.scanner as scanner_pkg
from keyguard.domain.keys import parse_virtual_key
from keyguard.domain.secret import Secret
from keyguard.scanner import managed
from keyguard.scanner.detectors import Detector, load_detectors
from keyguard.scanner.engine import scan_text
from keyguard.scanner.managed import ManagedKey
from keyguard.scanner.model import RawMatch
from scanner.keygen import openai_key, virtual_key


class FakeVault:
    """Knows one upstream key (by value) and one virtual key (by id); records revocations."""

    def __init__(self, upstream: str, virtual: str) -> None:
        self.upstream = upstream
        self.virtual_id = parse_virtual_key(virtual).key_id
        self.revoked: list[tuple[str, str, str]] = []

    def lookup(self, secret: Secret) -> ManagedKey | None:
        value = secret.reveal()
        if value == self.upstream:
            return ManagedKey("upstream", "default@v2", "prod")
        if value.startswith("kg_") and parse_virtual_key(value).key_id == self.virtual_id:
            return ManagedKey("virtual", self.virtual_id)
        return None

    def revoke(self, key: ManagedKey, *, actor: str, reason: str) -> str:
        self.revoked.append((key.key_id, actor, reason))
        return f"revoked {key.describe()}"


@pytest.fixture
def found(tmp_path, rng, scanner):
    up, vk, other = openai_key(rng), virtual_key(rng), openai_key(rng)
    (tmp_path / "a.py").write_text(f"A = '{up}'\nB = '{vk}'\nC = '{other}'\nD = '{up}'\n")
    return FakeVault(up, vk), scanner.scan_files(tmp_path, ["a.py"]).findings


def test_annotate_says_which_keys_keyguard_manages(found):
    vault, findings = found
    out = managed.annotate(findings, vault)
    assert [f.managed for f in out] == [
        "upstream credential default@v2 (prod)",
        f"virtual key {vault.virtual_id}",
        None,
        "upstream credential default@v2 (prod)",
    ]
    assert vault.revoked == []


def test_revoke_all_revokes_each_managed_key_once(found):
    vault, findings = found
    out = managed.revoke_all(findings, vault, actor="ci")
    assert sorted(k for k, _, _ in vault.revoked) == sorted(["default@v2", vault.virtual_id])
    assert all(actor == "ci" and "a.py:" in reason for _, actor, reason in vault.revoked)
    assert out[3].notes == ("revoked upstream credential default@v2 (prod)",)
    assert out[2].notes == ()


class AcmeDetector(Detector):
    import re

    name = "acme"
    keywords = (b"acme_",)
    pattern = re.compile(r"acme_[0-9a-f]{32}")

    def classify(self, value: str):
        return ("acme-token", "medium")


def test_detectors_register_through_entry_points(monkeypatch):
    ep = metadata.EntryPoint("acme", f"{__name__}:AcmeDetector", "keyguard.detectors")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    import sys

    sys.modules.setdefault(__name__, sys.modules[AcmeDetector.__module__])
    detectors = load_detectors()
    assert [d.name for d in detectors] == ["openai", "keyguard", "acme"]
    [m] = scan_text("token=acme_" + "0a" * 16, detectors)
    assert (m.detector, m.format) == ("acme", "acme-token")


def test_raw_match_repr_hides_the_value(rng):
    key = openai_key(rng)
    assert key not in repr(RawMatch("openai", "openai-project", "high", key, 1, 1, "utf-8"))


def test_public_surface():
    for name in scanner_pkg.__all__:
        assert getattr(scanner_pkg, name) is not None
    assert set(scanner_pkg.__all__) >= {"Scanner", "Finding", "ManagedKeys", "load_detectors"}
