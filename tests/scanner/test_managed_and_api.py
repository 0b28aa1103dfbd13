"""The managed-key port and the --to-vault sink against a real SQLite vault, detector
plugins through entry points, and the scanner's public surface."""

from __future__ import annotations

from datetime import timedelta
from importlib import metadata

import pytest

import keyguard.scanner as scanner_pkg
from keyguard.crypto.master import MasterKey
from keyguard.domain.keys import fingerprint
from keyguard.domain.records import KeySpec
from keyguard.domain.secret import Secret
from keyguard.errors import KeyNotFound
from keyguard.scanner import managed
from keyguard.scanner.detectors import Detector, load_detectors
from keyguard.scanner.engine import scan_text
from keyguard.scanner.model import RawMatch
from keyguard.scanner.vault_port import VaultManagedKeys, VaultSink
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from scanner.keygen import admin_token, openai_key
from vault.helpers import Clock


@pytest.fixture
def vault(tmp_path):
    store = SqliteStore(tmp_path / "vault.db")
    v = Vault.create(store, MasterKey.generate(), actor="tester", source="test")
    yield v
    v.close()


@pytest.fixture
def found(tmp_path, rng, scanner, vault):
    up, other = openai_key(rng), openai_key(rng)
    vault.add_upstream("prod", Secret(up, register=False))
    vk, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    (tmp_path / "a.py").write_text(
        f"A = '{up}'\nB = '{token.reveal()}'\nC = '{other}'\nD = '{up}'\n"
    )
    return vk, scanner.scan_files(tmp_path, ["a.py"]).findings


def test_annotate_says_which_keys_keyguard_manages(found, vault):
    vk, findings = found
    out = managed.annotate(findings, VaultManagedKeys(vault))
    assert [f.managed for f in out] == [
        "upstream credential 'prod' version 1, CURRENT",
        f"virtual key {vk.key_id} ('app')",
        None,
        "upstream credential 'prod' version 1, CURRENT",
    ]
    assert not vault.get_key(vk.key_id).revoked


def test_revoke_all_revokes_virtual_keys_and_flags_upstream_keys(found, vault):
    vk, findings = found
    out = managed.revoke_all(findings, VaultManagedKeys(vault), actor="user:ci")
    assert vault.get_key(vk.key_id).revoked
    flagged = [r for r in vault.audit.list() if r.action == "upstream.compromised"]
    assert len(flagged) == 1 and flagged[0].subject == "prod" and flagged[0].actor == "user:ci"
    assert "a.py:1" in flagged[0].details["reason"]
    assert out[1].notes == (f"revoked virtual key {vk.key_id}",)
    assert "keyguard upstream revoke prod --now" in out[0].notes[0]
    assert out[0].notes == out[3].notes and out[2].notes == ()
    assert out[0].managed == out[3].managed
    again = managed.revoke_all(findings, VaultManagedKeys(vault), actor="user:ci")
    assert again[1].notes == (f"virtual key {vk.key_id} was already revoked",)


def test_emergency_hook_runs_for_current_keys_and_falls_back(found, vault):
    _, findings = found
    calls = []

    def emergency(name):
        calls.append(name)
        return f"rotated {name}"

    out = managed.revoke_all(findings[:1], VaultManagedKeys(vault, emergency=emergency))
    assert calls == ["prod"] and out[0].notes == ("rotated prod",)

    def no_admin_key(name):
        raise KeyNotFound(f"{name!r} has no admin key")

    out = managed.revoke_all(findings[:1], VaultManagedKeys(vault, emergency=no_admin_key))
    assert "emergency rotation not possible" in out[0].notes[0]


def test_revoke_marks_a_leaked_upstream_version_compromised_in_the_vault(found, vault):
    _, findings = found
    managed.revoke_all(findings, VaultManagedKeys(vault), actor="user:ci")
    (version,) = vault.get_upstream("prod").versions
    assert version.compromised and version.compromised_source == "scan"
    assert "a.py:1" in version.compromised_reason  # where it was found, never the key
    assert version.fingerprint in version.compromised_reason
    assert vault.get_upstream("prod").compromised_in_use() == (version,)
    # found again by a later scan: the first mark is kept
    managed.revoke_all(findings, VaultManagedKeys(vault), actor="user:ci")
    assert vault.get_upstream("prod").versions[0].compromised_at == version.compromised_at
    text = repr(vault.audit.list()) + repr(vault.get_upstream("prod"))
    assert not [f for f in findings if f.secret.reveal() in text]


def test_the_version_is_marked_before_the_emergency_rotation_runs(found, vault):
    _, findings = found
    seen = []

    def emergency(name):
        seen.append(vault.get_upstream(name).versions[0].compromised)
        return f"rotated {name}"

    out = managed.revoke_all(findings[:1], VaultManagedKeys(vault, emergency=emergency))
    assert seen == [True] and out[0].notes == ("rotated prod",)


def test_admin_tokens_are_found_looked_up_and_revoked(tmp_path, scanner, vault, rng):
    record, token = vault.create_admin_token("ops", "admin")
    other, stranger = vault.create_admin_token("other", "read")
    vault.revoke_admin_token(other.token_id)
    foreign = admin_token(rng)
    (tmp_path / "ops.sh").write_text(
        f"export KG_ADMIN={token.reveal()}\nold={stranger.reveal()}\nx={foreign}\n"
    )
    findings = scanner.scan_files(tmp_path, ["ops.sh"]).findings
    assert [f.format for f in findings] == ["keyguard-admin-token"] * 3
    keys = VaultManagedKeys(vault)
    out = managed.revoke_all(findings, keys, actor="user:ci")
    assert out[0].managed == f"admin token {record.token_id} ('ops')"
    assert out[0].notes == (f"revoked admin token {record.token_id}",)
    assert "revoked" in out[1].managed and "already revoked" in out[1].notes[0]
    assert out[2].managed is None
    assert [t.revoked for t in vault.list_admin_tokens()] == [True, True]


def test_a_leaked_expired_admin_token_is_recognised_and_revoked(tmp_path, scanner, rng):
    clock = Clock()
    store = SqliteStore(tmp_path / "clocked.db")
    v = Vault.create(store, MasterKey.generate(), actor="tester", source="test", clock=clock)
    try:
        ends = clock.now + timedelta(hours=1)
        record, token = v.create_admin_token("ci", "read", expires_at=ends)
        clock.advance(hours=2)
        (tmp_path / "ci.env").write_text(f"KG_ADMIN={token.reveal()}\n")
        findings = scanner.scan_files(tmp_path, ["ci.env"]).findings
        out = managed.revoke_all(findings, VaultManagedKeys(v), actor="user:ci")
        assert out[0].managed is not None and record.token_id in out[0].managed
        assert out[0].notes == (f"revoked admin token {record.token_id}",)
        assert [t.revoked for t in v.list_admin_tokens()] == [True]
    finally:
        v.close()


def test_each_key_is_looked_up_once_and_described_alike(tmp_path, scanner, vault, rng):
    vault.add_upstream("prod", Secret(openai_key(rng), register=False))
    vk, token = vault.create_key(KeySpec(name="app", upstream="prod"))
    (tmp_path / "a.py").write_text(f"A = '{token.reveal()}'\nB = '{token.reveal()}'\n")
    findings = scanner.scan_files(tmp_path, ["a.py"]).findings
    keys = VaultManagedKeys(vault)
    asked = []
    real_lookup = keys.lookup
    keys.lookup = lambda secret: asked.append(secret) or real_lookup(secret)  # type: ignore[method-assign]
    out = managed.revoke_all(findings, keys, actor="user:ci")
    assert len(asked) == 1 and vault.get_key(vk.key_id).revoked
    assert out[0].managed == out[1].managed == f"virtual key {vk.key_id} ('app')"
    assert out[0].notes == out[1].notes == (f"revoked virtual key {vk.key_id}",)


def test_vault_sink_stores_new_keys_once(vault, rng):
    key = openai_key(rng)
    sink = VaultSink(vault)
    first = sink.store("OPENAI_API_KEY", Secret(key, register=False))
    assert "upstream credential 'openai-api-key'" in first and key not in first
    assert vault.find_managed(fingerprint(key)).name == "openai-api-key"
    second = sink.store("OPENAI_API_KEY", Secret(key, register=False))
    assert "already in the vault" in second
    other = sink.store("OPENAI_API_KEY", Secret(openai_key(rng), register=False))
    assert "'openai-api-key-2'" in other


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
    monkeypatch.setattr("keyguard.scanner.detectors._group_declared", lambda: True)
    import sys

    sys.modules.setdefault(__name__, sys.modules[AcmeDetector.__module__])
    detectors = load_detectors()
    assert [d.name for d in detectors] == ["openai", "keyguard", "keyguard-admin", "acme"]
    [m] = scan_text("token=acme_" + "0a" * 16, detectors)
    assert (m.detector, m.format) == ("acme", "acme-token")


def test_raw_match_repr_hides_the_value(rng):
    key = openai_key(rng)
    assert key not in repr(RawMatch("openai", "openai-project", "high", key, 1, 1, "utf-8"))


def test_plugin_discovery_is_skipped_when_no_distribution_declares_the_group():
    from keyguard.scanner.detectors import _group_declared

    assert _group_declared() is False  # keyguard ships no plugin of its own
    assert [d.name for d in load_detectors()] == ["openai", "keyguard", "keyguard-admin"]


def test_public_surface():
    for name in scanner_pkg.__all__:
        assert getattr(scanner_pkg, name) is not None
    assert set(scanner_pkg.__all__) == set(scanner_pkg._EXPORTS)
    assert set(scanner_pkg.__all__) >= {"Scanner", "Finding", "ManagedKeys", "load_detectors"}


def test_a_detector_without_keywords_always_runs():
    import re

    class Bare(Detector):
        name = "bare"
        pattern = re.compile(r"zz-[0-9]{8}")

        def classify(self, value):
            return ("bare-token", "low")

    [m] = scan_text("x zz-12345678 y", [Bare()])
    assert m.format == "bare-token"
    from keyguard.scanner.engine import scan_bytes

    assert [m.format for m in scan_bytes(b"x zz-12345678 y", [Bare()])] == ["bare-token"]
