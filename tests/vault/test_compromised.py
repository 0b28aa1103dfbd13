"""Compromised upstream versions: the pure helpers (reason, mark, due planning) and the vault's
``mark_upstream_compromised`` (persistent, audited, idempotent, never any key material)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from keyguard.domain.keys import generate_openai_style_key, redacted_form
from keyguard.domain.records import (
    COMPROMISE_REASON_MAX,
    Label,
    UpstreamCredential,
    UpstreamVersion,
    compromise_reason,
)
from keyguard.domain.rotation import RotationInputs, compromised_due, plan_rotation
from keyguard.domain.secret import Secret
from keyguard.errors import ConfigError, KeyNotFound
from keyguard.vault import Vault
from vault.helpers import T0, Clock

# -- domain ----------------------------------------------------------------------------------


def _version(n: int, label: Label | None) -> UpstreamVersion:
    return UpstreamVersion("prod", n, f"sha256:{n:016x}", T0, label)


def _cred(*versions: UpstreamVersion, max_age: timedelta | None = None) -> UpstreamCredential:
    return UpstreamCredential("prod", created_at=T0, max_age=max_age, versions=versions)


def test_reason_is_cleaned_cut_and_never_holds_a_key() -> None:
    key = generate_openai_style_key()
    cleaned = compromise_reason(f"  pasted\x00 {key}\nin  chat ")
    assert key not in cleaned and key[-12:-4] not in cleaned
    assert cleaned == f"pasted {redacted_form(key)} in chat"
    long = compromise_reason("x" * 1000)
    assert len(long) == COMPROMISE_REASON_MAX and long.endswith("…")
    for empty in ("", "   ", "\x00\n"):
        with pytest.raises(ConfigError, match="reason is required"):
            compromise_reason(empty)


def test_mark_compromised_is_pure_and_keeps_the_first_mark() -> None:
    v = _version(1, Label.CURRENT)
    assert not v.compromised
    marked = v.mark_compromised(T0, "found in a.py", "scan")
    assert marked.compromised and marked.compromised_at == T0
    assert (marked.compromised_reason, marked.compromised_source) == ("found in a.py", "scan")
    assert not v.compromised  # frozen: the original is unchanged
    assert marked.mark_compromised(T0 + timedelta(days=1), "other", "cli") is marked
    with pytest.raises(ConfigError, match="timezone-aware"):
        v.mark_compromised(T0.replace(tzinfo=None), "r", "s")


def test_compromised_in_use_is_current_and_pending_only() -> None:
    prev = _version(1, Label.PREVIOUS).mark_compromised(T0, "old leak", "scan")
    cur = _version(2, Label.CURRENT)
    pend = _version(3, Label.PENDING)
    assert _cred(prev, cur, pend).compromised_in_use() == ()
    pend_c = pend.mark_compromised(T0, "r", "cli")
    cur_c = cur.mark_compromised(T0 + timedelta(hours=1), "r", "cli")
    assert _cred(prev, cur, pend_c).compromised_in_use() == (pend_c,)
    assert _cred(prev, cur_c, pend_c).compromised_in_use() == (cur_c, pend_c)  # CURRENT first
    assert _cred(prev, cur_c).version_number(1) == prev
    assert _cred(prev, cur_c).version_number(7) is None


def test_a_compromised_current_version_is_due_at_once() -> None:
    now = T0 + timedelta(minutes=5)
    at = T0 + timedelta(minutes=1)
    cur = _version(1, Label.CURRENT).mark_compromised(at, "leak", "scan")
    # no max_age and a rotation in flight: due all the same, since it was marked
    inputs = RotationInputs(upstreams=[_cred(cur)], in_flight=["prod"])
    (item,) = plan_rotation(inputs, now)
    assert (item.name, item.due_at, item.automatic) == ("prod", at, False)
    assert item.compromised is Label.CURRENT and item.compromised_version == 1
    assert "no admin key" in item.reason and "upstream revoke prod --now" in item.reason
    (auto,) = plan_rotation(replace(inputs, admin_upstreams=["prod"]), now)
    assert auto.automatic and "emergency rotation" in auto.reason
    # a compromised version that lost its labels no longer makes the credential due
    gone = replace(cur, label=None)
    assert plan_rotation(RotationInputs(upstreams=[_cred(gone)]), now) == []


def test_a_compromised_pending_version_is_due_and_age_still_counts_otherwise() -> None:
    now = T0 + timedelta(days=1)
    pend = _version(2, Label.PENDING).mark_compromised(T0, "leak", "cli")
    item = compromised_due(_cred(_version(1, Label.CURRENT), pend), automatic=True)
    assert item is not None and item.compromised is Label.PENDING
    assert "new rotation" in item.reason
    manual = compromised_due(_cred(_version(1, Label.CURRENT), pend), automatic=False)
    assert manual is not None and "--abort" in manual.reason
    aged = _cred(_version(1, Label.CURRENT), max_age=timedelta(hours=1))
    (item,) = plan_rotation(RotationInputs(upstreams=[aged]), now)
    assert item.compromised is None and item.due_at == T0 + timedelta(hours=1)


# -- vault -----------------------------------------------------------------------------------


def test_vault_marks_a_version_persistently_with_an_audit_record(
    vault: Vault, clock: Clock, openai_key: Secret
) -> None:
    vault.add_upstream("prod", openai_key)
    clock.advance(minutes=3)
    marked = vault.mark_upstream_compromised(
        "prod", 1, f"pasted {openai_key.reveal()} in a ticket", actor="alice", source="cli"
    )
    assert marked.compromised_at == clock() and marked.compromised_source == "cli"
    assert marked.compromised_reason == f"pasted {openai_key.redacted} in a ticket"
    assert vault.get_upstream("prod").versions[0] == marked
    (record,) = [r for r in vault.audit.list() if r.action == "upstream.compromised"]
    assert (record.actor, record.subject, record.source, record.outcome) == (
        "alice",
        "prod",
        "cli",
        "flagged",
    )
    assert record.details["priority"] == "high" and record.details["label"] == "CURRENT"
    assert record.details["version"] == 1
    assert record.details["fingerprint"] == openai_key.fingerprint
    assert openai_key.reveal() not in repr(vault.audit.list())


def test_marking_twice_keeps_the_first_time_and_audits_both(
    vault: Vault, clock: Clock, openai_key: Secret
) -> None:
    vault.add_upstream("prod", openai_key)
    first = vault.mark_upstream_compromised("prod", 1, "found by scan", source="scan")
    clock.advance(days=2)
    again = vault.mark_upstream_compromised("prod", 1, "reported by a user", source="cli")
    assert again == first and again.compromised_reason == "found by scan"
    outcomes = [r.outcome for r in vault.audit.list() if r.action == "upstream.compromised"]
    assert outcomes == ["flagged", "already_flagged"]


def test_marking_an_unknown_version_or_credential_is_not_found(
    vault: Vault, openai_key: Secret
) -> None:
    vault.add_upstream("prod", openai_key)
    with pytest.raises(KeyNotFound, match="no version 2"):
        vault.mark_upstream_compromised("prod", 2, "r")
    with pytest.raises(KeyNotFound):
        vault.mark_upstream_compromised("nope", 1, "r")
    with pytest.raises(ConfigError):
        vault.mark_upstream_compromised("prod", 1, "  ")
    assert not vault.get_upstream("prod").versions[0].compromised
    assert not [r for r in vault.audit.list() if r.action == "upstream.compromised"]


def test_the_mark_survives_reopening_and_label_moves(
    vault: Vault, openai_key: Secret, db_path: object, master: object, clock: Clock
) -> None:
    from keyguard.storage.sqlite import SqliteStore

    vault.add_upstream("prod", openai_key)
    vault.mark_upstream_compromised("prod", 1, "leak")
    vault.add_upstream_version("prod", Secret(generate_openai_style_key()), label=Label.CURRENT)
    vault.close()
    again = Vault.open(SqliteStore(db_path), master, clock=clock)  # type: ignore[arg-type]
    try:
        first, second = again.get_upstream("prod").versions
        assert first.compromised and first.label is Label.PREVIOUS
        assert not second.compromised and second.label is Label.CURRENT
        assert again.get_upstream("prod").compromised_in_use() == ()
    finally:
        again.close()
